"""The engine's fault injection in-process (Starlette TestClient): evict, error, delay, restart."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mmbench.world.engine.app import EngineConfig, create_app
from tests.unit.test_engine_app import body, item_text, null_status, pixels, post, send_full, stats

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


@contextmanager
def engine(**config: float) -> Iterator[TestClient]:
    with TestClient(create_app(EngineConfig(**config)), raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c


def statuses(c: TestClient, n: int) -> list[int]:
    return [post(c, body(["h"], [item_text(pixels(0))])).status_code for _ in range(n)]


def test_error_rate_answers_a_seeded_fraction_with_500() -> None:
    with (
        engine(error_rate=0.3, seed=7) as a,
        engine(error_rate=0.3, seed=7) as b,
        engine(error_rate=0.3, seed=8) as other,
    ):
        got = statuses(a, 200)
        assert got == statuses(b, 200)  # the same seed, the same faults
        assert got != statuses(other, 200)
        assert set(got) == {200, 500}
        assert 0.2 < got.count(500) / 200 < 0.4
        s = stats(a)
        assert s["injected_errors"] == s["status_counts"]["500"] == got.count(500)
        assert s["requests"] == 200
        # The body of a refused request was read: the engine counts every byte it was sent.
        assert s["bytes_received"] == 200 * len(body(["h"], [item_text(pixels(0))]))
    with engine(error_rate=1.0) as c:
        r = post(c, body(["h"], [item_text(pixels(0))]))
        assert r.status_code == 500 and "injected fault" in r.json()["error"]
        assert stats(c)["cache_items"] == 0  # refused before the item was cached


def test_error_rate_zero_never_refuses() -> None:
    with engine(error_rate=0.0) as c:
        assert set(statuses(c, 50)) == {200}
        assert stats(c)["injected_errors"] == 0


def test_evict_rate_one_drops_every_cached_item_before_resolving() -> None:
    with engine(evict_rate=1.0) as c:
        send_full(c, "a", 1)
        assert stats(c)["cache_items"] == 1  # cached by its own request (evictions come first)
        assert null_status(c, "a") == 500  # dropped at the start of this request
        s = stats(c)
        assert s["injected_evictions"] == 1 and s["cache_items"] == 0


def test_evict_rate_drops_a_seeded_fraction_of_the_cache() -> None:
    def survivors(seed: int) -> list[str]:
        # Item i is exposed to the draws of the 39 - i requests after its own.
        with engine(evict_rate=0.05, seed=seed) as c:
            for i in range(40):
                send_full(c, f"h{i}", i)
            s = stats(c)
            assert s["cache_items"] + s["injected_evictions"] == 40
            return c.app.state.engine.cache.keys()  # type: ignore[attr-defined, no-any-return]

    with engine(evict_rate=0.0) as c:
        for i in range(5):
            send_full(c, f"h{i}", i)
        assert all(null_status(c, f"h{i}") == 200 for i in range(5))
        assert stats(c)["injected_evictions"] == 0
    first = survivors(3)
    assert first == survivors(3)  # seeded
    assert first != survivors(4)
    assert 5 < len(first) < 35  # expected ~17


def test_delay_is_slept_in_the_handler() -> None:
    with engine(delay_ms=60) as c:
        t0 = time.perf_counter()
        assert statuses(c, 3) == [200, 200, 200]
        assert time.perf_counter() - t0 >= 3 * 0.06


def test_restart_every_calls_the_quota_hook_once_after_the_nth_answer() -> None:
    with engine(restart_every=3) as c:
        calls: list[int] = []
        eng = c.app.state.engine  # type: ignore[attr-defined]
        eng.on_quota = lambda: calls.append(eng.counters.requests)
        statuses(c, 2)
        assert calls == []
        statuses(c, 3)
        assert calls == [3]  # once, after the third request was answered


@pytest.mark.parametrize("bad", [{"evict_rate": 1.5}, {"error_rate": -0.1}, {"delay_ms": -1.0}])
def test_engine_config_rejects_bad_fault_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**bad)  # type: ignore[arg-type]
