"""`mmbench engine`: serve the embedded engine standalone, for `--engine-url`, until Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from mmbench.cli import common as c
from mmbench.config import DTYPES
from mmbench.errors import MmbenchError
from mmbench.measure.engines import standalone_vllm
from mmbench.units import GIB, MIB
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.standalone import is_loopback, serve
from mmbench.world.geometry import DEFAULT_MODEL, get_geometry

DEFAULTS = EngineConfig()


@c.handle_errors
@c.with_engine_flags("engine_model", "engine_arg", "vllm_python", "engine_ready_timeout")
def engine(
    engine_flags: c.EngineFlags,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="port to listen on; 0 chooses a free one")
    ] = 8000,
    host: Annotated[
        str, typer.Option(help="address to bind; anything but loopback lets other machines send it requests")
    ] = "127.0.0.1",
    cache_gb: Annotated[
        float, typer.Option(min=0.0, help="mm cache GiB, LRU by bytes; 0 = no cache")
    ] = DEFAULTS.cache_bytes / GIB,
    max_body_mb: Annotated[
        int, typer.Option(min=1, help="bodies above this many MiB are refused with 413")
    ] = DEFAULTS.max_body_bytes // MIB,
    seed: Annotated[int, typer.Option(min=0, help="seed of the completions it answers")] = 0,
    dtype: Annotated[
        str, typer.Option(help=f"dtype raw media are preprocessed to: {', '.join(DTYPES)}")
    ] = "float32",
    vllm: Annotated[
        bool,
        typer.Option(
            "--vllm", help="serve a real vLLM instead (from its environment: make vllm), for --engine-url"
        ),
    ] = False,
    model: c.Model = None,
    request_log: Annotated[
        Path | None,
        typer.Option(
            help="append one JSON line per request to this file: when it arrived, was read and was "
            "answered, its status, hashes and null slots (the order the engine saw)"
        ),
    ] = None,
) -> None:
    """Serve the embedded engine standalone (vLLM's /inference/v1/generate, /v1/models, and /stats)."""
    if vllm:
        if request_log is not None:
            raise MmbenchError("--request-log is the embedded engine's; a vLLM logs to its own output")
        _serve_vllm(host, port, cache_gb, model, engine_flags)
        return
    vllm_given = (["--model"] if model is not None else []) + engine_flags.given()
    if vllm_given:
        raise MmbenchError(f"{vllm_given[0]} is an option of mmbench engine --vllm; add --vllm")
    if dtype not in DTYPES:
        raise MmbenchError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if not is_loopback(host):
        c.err_console.print(
            f"mmbench engine: warning: --host {host} is not loopback: any machine that reaches it can "
            "send it requests (it has no authentication)",
            markup=False,
        )
    if request_log is not None and (request_log.is_dir() or not request_log.parent.is_dir()):
        raise MmbenchError(
            f"--request-log {request_log}: not a file in an existing directory; give a file path there"
        )
    config = EngineConfig(
        cache_bytes=int(cache_gb * GIB), max_body_bytes=max_body_mb * MIB, seed=seed, dtype=dtype,
        request_log=None if request_log is None else str(request_log),
    )  # fmt: skip

    def ready(url: str) -> None:
        typer.echo(f"mmbench engine: serving {url} (use --engine-url {url}); Ctrl-C stops it")

    # Ctrl-C (SIGINT) stops it with 130 even where it was started with SIGINT ignored (a parent that
    # ignores it, a background job of a shell without job control): uvicorn restores the handler it
    # found and raises the signal again once it has shut down, which SIG_IGN would swallow (exit 0).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    serve(config, host, port, ready)


def _serve_vllm(host: str, port: int, cache_gb: float, model: str | None, flags: c.EngineFlags) -> None:
    options = flags.vllm_only()
    preset = model or DEFAULT_MODEL
    get_geometry(preset)
    server = standalone_vllm(preset, cache_gb, options, flags.engine_arg_words(), host, port)
    with c.console.status(f"starting vLLM ({server.env.describe()}) ..."):
        server.start()
    try:
        url = server.url
        typer.echo(f"mmbench engine: vLLM serving {url} as {preset} (use --engine-url {url}); Ctrl-C stops")
        typer.echo(f"  vllm {server.flags}")
        assert server.proc is not None
        code = server.proc.wait()
        raise MmbenchError(f"vLLM exited with code {code}: {server.failure}", exit_code=1)
    finally:
        server.stop()
