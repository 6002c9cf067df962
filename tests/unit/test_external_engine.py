"""--engine-url: the URL, the checks before any point, and what a point refuses on an external engine."""

from __future__ import annotations

import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.facts import facts_of
from mmbench.measure.external import check_engine, refusal
from mmbench.world.engine.remote import EngineInfo, normalize_url
from mmbench.world.engine.standalone import is_loopback, listen, url_of

INFO = EngineInfo("http://127.0.0.1:9", {"qwen3-vl": 100_000, "qwen2-vl": None}, has_stats=False)


@pytest.mark.parametrize(
    ("url", "want"),
    [("http://127.0.0.1:8000/", "http://127.0.0.1:8000"), (" https://h.example/v ", "https://h.example/v")],
)
def test_url_is_normalized(url: str, want: str) -> None:
    assert normalize_url(url) == want


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h", "http://", "http://h:port", "http://h/?q=1"])
def test_bad_url_is_one_line(url: str) -> None:
    with pytest.raises(MmbenchError, match="--engine-url"):
        normalize_url(url)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"engine_evict_rate": 0.5}, "engine_evict_rate need the embedded engine"),
        ({"engine_restart_every": 3, "engine_delay_ms": 5.0}, "engine_restart_every, engine_delay_ms need"),
        ({"engine_error_rate": 0.1}, "engine_error_rate need the embedded engine"),
        ({"mode": "raw-file"}, "mode raw-file needs the embedded engine"),
    ],
)
def test_what_needs_the_embedded_engine_is_refused(params: dict[str, object], needle: str) -> None:
    reason = refusal(PointConfig(**params), INFO)  # type: ignore[arg-type]
    assert reason is not None and needle in reason


def test_a_model_the_engine_does_not_serve_is_refused_with_how_to_serve_it() -> None:
    info = EngineInfo(INFO.url, {"Qwen/Qwen3-VL-8B-Instruct": 32_768}, has_stats=False)
    reason = refusal(PointConfig(), info)
    assert reason is not None and "--served-model-name qwen3-vl" in reason


def test_max_model_len_bounds_the_longest_request() -> None:
    config = PointConfig(turns=8, images_per_turn=1, image_size="1024")
    # 8 turns of 32 text tokens, 7 completions of 16, 8 images of 1,024 tokens, and the completion
    assert facts_of(config).longest_request_tokens == 8 * 32 + 7 * 16 + 8 * 1024 + 16
    tight = EngineInfo(INFO.url, {"qwen3-vl": facts_of(config).longest_request_tokens}, has_stats=False)
    assert refusal(config, tight) is None
    short = EngineInfo(INFO.url, {"qwen3-vl": facts_of(config).longest_request_tokens - 1}, has_stats=False)
    reason = refusal(config, short)
    assert reason is not None and "max_model_len" in reason
    assert refusal(PointConfig(model="qwen2-vl"), INFO) is None  # no max_model_len given: not checked


def test_an_unreachable_engine_is_one_line_before_anything() -> None:
    with listen("127.0.0.1", 0) as sock:  # a port that is surely closed once this socket is
        url = url_of(sock)
    with pytest.raises(MmbenchError, match=f"the engine at {url} is not reachable"):
        check_engine(url, [PointConfig()])


def test_loopback_is_told_from_other_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
