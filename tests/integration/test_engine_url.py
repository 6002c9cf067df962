"""--engine-url end to end on loopback: a sweep against `mmbench engine` ships the same bytes as the
embedded engine; an engine that exposes no /stats leaves every engine figure unknown; Ctrl-C stops
`mmbench engine`. Tiny points (256x256 after the preset's minimum, K <= 2, N = 2)."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from mmbench.api import run_sweep
from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.world.engine.__main__ import _server_config
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.engine.standalone import listen, url_of

slow = pytest.mark.slow
SCENARIO = {
    "version": 1, "description": "external engine", "mode": ["full", "hash-only"], "rollouts": [1, 2],
    "turns": 2, "image_size": 64, "codec": "vllm",
}  # fmt: skip
# What must not depend on which engine served the points.
TRAFFIC = (
    "bytes_shipped",
    "bytes_per_turn",
    "requests",
    "full_items_sent",
    "null_items_sent",
    "wrong_results",
)


def _start_engine() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmbench.cli", "engine", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=60):
            proc.kill()
            raise AssertionError("mmbench engine printed nothing within 60 s")
    line = proc.stdout.readline()
    assert "serving http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split("serving ")[1].split()[0]


@pytest.fixture
def engine_cli() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = _start_engine()
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@slow
def test_a_sweep_against_mmbench_engine_ships_what_the_embedded_engine_gets(
    engine_cli: tuple[subprocess.Popen[str], str],
) -> None:
    proc, url = engine_cli
    external = run_sweep(SCENARIO, engine_url=url).points
    embedded = run_sweep(SCENARIO).points
    assert [r.key() for r in external] == [r.key() for r in embedded] and len(external) == 4
    for ext, emb in zip(external, embedded, strict=True):
        assert ext.ok and emb.ok, (ext.cause, emb.cause)
        assert {k: getattr(ext, k) for k in TRAFFIC} == {k: getattr(emb, k) for k in TRAFFIC}
        assert (ext.engine, emb.engine) == (url, "embedded")
        # the engine's counters are the point's own, though it served every point before it
        assert ext.engine_bytes_received == ext.bytes_shipped == emb.engine_bytes_received
        # nothing is read from its process
        assert ext.engine_restarts is None and ext.engine_peak_rss_bytes is None
    # Ctrl-C: the engine answers what is in flight, then exits as mmbench does on Ctrl-C (130), quietly
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


class _ServerThread:
    """The engine's app without /stats (as a vLLM has none), served on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        app = create_app(EngineConfig())
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/stats"]
        self.sock = listen("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(_server_config(app))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@slow
def test_an_engine_without_stats_leaves_engine_figures_unknown_never_zero(tmp_path: Path) -> None:
    config = PointConfig(mode="hash-only", rollouts=2, turns=2, image_size="64", codec="vllm")
    with _ServerThread() as stub:
        record = measure_point(config, 0, HarnessOptions(engine_url=stub.url, timeline_dir=tmp_path))
    assert record.ok, record.cause
    assert record.engine == stub.url
    assert record.bytes_shipped and record.wrong_results == 0 and record.requests == 4
    unknown = (
        "engine_rss_bytes", "engine_cache_bytes", "engine_cache_hits", "engine_bytes_received",
        "engine_cpu_s", "engine_errors", "engine_rss_baseline_bytes", "engine_preprocess_calls",
    )  # fmt: skip
    assert {name: getattr(record, name) for name in unknown} == dict.fromkeys(unknown)


def test_faults_are_refused_on_an_external_engine_before_anything_runs(tmp_path: Path) -> None:
    from mmbench.errors import MmbenchError

    with _ServerThread() as stub:
        options = HarnessOptions(engine_url=stub.url, timeline_dir=tmp_path)
        with pytest.raises(MmbenchError, match="engine_error_rate need the embedded engine"):
            measure_point(PointConfig(engine_error_rate=0.2), 0, options)
    assert not any(tmp_path.iterdir())
