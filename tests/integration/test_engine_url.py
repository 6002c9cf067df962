"""--engine-url end to end on loopback: a sweep against `mmbench engine` ships the same bytes as the
embedded engine; Ctrl-C stops `mmbench engine`. An engine that answers as a vLLM does (a stub: the
same app without /stats and checksums) leaves what it does not expose unknown. Tiny points (256x256
after the preset's minimum, K <= 2, N = 2)."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mmbench.api import run_point, run_sweep
from mmbench.config import PointConfig
from mmbench.measure.engines import External
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.world.engine.__main__ import _server_config
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.engine.standalone import listen, url_of
from mmbench.world.wire import GENERATE_PATH
from tests.helpers import TRAFFIC_FIGURES

slow = pytest.mark.slow
SCENARIO = {
    "version": 1, "description": "external engine", "mode": ["full", "hash-only"], "rollouts": [1, 2],
    "turns": 2, "image_size": 64, "codec": "vllm",
}  # fmt: skip
# What must not depend on which engine served the points.
TRAFFIC = TRAFFIC_FIGURES


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
        assert {k: ext.flat()[k] for k in TRAFFIC} == {k: emb.flat()[k] for k in TRAFFIC}
        assert (ext.engine.kind, ext.engine.url, emb.engine.kind) == ("external", url, "embedded")
        # the engine's counters are the point's own, though it served every point before it
        assert (
            ext.engine.figures.bytes_received
            == ext.traffic.bytes_shipped
            == emb.engine.figures.bytes_received
        )
        # nothing is read from its process
        assert ext.engine.figures.restarts is None and ext.engine.figures.peak_rss_bytes is None
    # Ctrl-C: the engine answers what is in flight, then exits as mmbench does on Ctrl-C (130), quietly
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def vllm_like_app() -> Starlette:
    """The engine's app answering as a vLLM does: no /stats, no item_checksums, the completion only
    in `choices` (mmbench's engine also answers it at the top level)."""
    app = create_app(EngineConfig())
    engine = app.state.engine

    async def generate(request: Request) -> Response:
        answer = await engine.generate(request)
        body = json.loads(bytes(answer.body))
        for key in ("item_checksums", "token_ids", "logprobs"):
            body.pop(key, None)
        return Response(json.dumps(body), status_code=answer.status_code, media_type="application/json")

    models = next(r for r in app.router.routes if getattr(r, "path", "") == "/v1/models")
    return Starlette(routes=[Route(GENERATE_PATH, generate, methods=["POST"]), models])


class _ServerThread:
    """An app served on 127.0.0.1 in a thread of the test."""

    def __init__(self, app: Starlette) -> None:
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
@pytest.mark.parametrize("mode", ["hash-only", "raw"])
def test_against_a_vllm_like_engine_what_it_does_not_expose_is_unknown_never_zero(
    mode: str, tmp_path: Path
) -> None:
    config = PointConfig(mode=mode, rollouts=2, turns=2, image_size="64", codec="vllm")
    with _ServerThread(vllm_like_app()) as stub:
        record = measure_point(config, 0, HarnessOptions(engine=External(stub.url), timeline_dir=tmp_path))
    embedded = measure_point(config, 0, HarnessOptions(timeline_dir=tmp_path))
    assert record.ok and embedded.ok, (record.cause, embedded.cause)
    assert record.engine.url == stub.url
    # the completions came from `choices`: the same prompts, the same bytes
    same = (
        "traffic.bytes_shipped",
        "traffic.bytes_per_turn",
        "traffic.requests",
        "client.rendering.prompt_tokens",
        "client.rendering.image_tokens",
    )
    got, want = record.flat(), embedded.flat()
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
    assert (
        embedded.traffic.wrong_results == 0 and record.traffic.wrong_results is None
    )  # no checksums to compare with
    unknown = (
    "engine.figures.rss_bytes", "engine.figures.cache_bytes", "engine.figures.cache_hits",
    "engine.figures.bytes_received", "engine.figures.cpu_s", "engine.figures.errors",
    "engine.figures.rss_baseline_bytes", "engine.figures.preprocess_calls",
    )  # fmt: skip
    assert {name: got[name] for name in unknown} == dict.fromkeys(unknown)


def test_faults_are_refused_on_an_external_engine_before_anything_runs(tmp_path: Path) -> None:
    """A single point (run_point) and a sweep check their points against the engine before any runs
    (the harness itself no longer checks every point)."""
    from mmbench.errors import MmbenchError

    fault = "engine_error_rate need the embedded engine"
    with _ServerThread(vllm_like_app()) as stub:
        with pytest.raises(MmbenchError, match=fault):
            run_point(engine_url=stub.url, engine_error_rate=0.2)
        with pytest.raises(MmbenchError, match=fault):
            run_sweep(SCENARIO, tmp_path / "out", engine_url=stub.url, engine_error_rate=[0.0, 0.2])
    assert not any(tmp_path.iterdir())
