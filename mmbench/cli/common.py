"""What every command shares: the one error edge, consoles, and the point flags."""

from __future__ import annotations

import contextlib
import functools
import inspect
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_type_hints

import typer
from rich.console import Console

from mmbench.config import RENDERERS, PointConfig, engine_arg_list, field_names
from mmbench.errors import MmbenchError
from mmbench.measure.engines import VLLM, VLLM_DEFAULTS, VllmOptions, check_engine_name
from mmbench.transports.registry import MODES
from mmbench.units import parse_size
from mmbench.world.codec import CODECS
from mmbench.world.engine.vllm.server import READY_TIMEOUT_S
from mmbench.world.geometry import MODELS
from mmbench.world.images import CONTENTS, IMAGE_FORMATS

# Not a terminal (CI logs, pipes): rich would assume 80 columns and squeeze the tables.
NON_TTY_WIDTH = 150
console = Console()
if not console.is_terminal:
    console = Console(width=NON_TTY_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Expected failures become one line on stderr and their exit code; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MmbenchError as exc:
            err_console.print(f"mmbench: error: {exc}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("mmbench: interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


def _choices(values: object) -> str:
    return ", ".join(str(v) for v in values)  # type: ignore[attr-defined]


# The point flags, shared by run, sweep and profile. Each takes text so that sweep can take a
# comma-separated list; `point_values` parses and checks it against PointConfig's field types.
Mode = Annotated[
    str | None,
    typer.Option(
        "--mode",
        "--modes",
        help=f"transport mode(s): {_choices(MODES)} (default: run full, sweep all)",
        show_default=False,
    ),
]
Rollouts = Annotated[
    str | None,
    typer.Option(
        "--rollouts", "-k", help="K: concurrent rollouts (default: run 1, sweep 1,2,4,8)", show_default=False
    ),
]
Turns = Annotated[str | None, typer.Option(help="N: turns per rollout (default 8)", show_default=False)]
ImagesPerTurn = Annotated[
    str | None, typer.Option(help="new images per turn (default 1)", show_default=False)
]
ImageSize = Annotated[
    str | None, typer.Option(help="source side or WIDTHxHEIGHT (default 512)", show_default=False)
]
Model = Annotated[
    str | None,
    typer.Option(help=f"geometry preset: {_choices(MODELS)} (default qwen3-vl)", show_default=False),
]
ImageFormat = Annotated[
    str | None,
    typer.Option(help=f"source encoding: {_choices(IMAGE_FORMATS)} (default png)", show_default=False),
]
Content = Annotated[
    str | None,
    typer.Option(
        help=f"source content (sets compressibility): {_choices(CONTENTS)} (default photo)",
        show_default=False,
    ),
]
PoolSize = Annotated[str | None, typer.Option(help="renderers in the pool (default 1)", show_default=False)]
ImageCacheMax = Annotated[
    str | None, typer.Option(help="renderer FIFO cache entries, 0 = off (default 32)", show_default=False)
]
EngineCacheGb = Annotated[
    str | None, typer.Option(help="engine mm cache GiB, 0 = none (default 4)", show_default=False)
]
EngineMaxBodyMb = Annotated[
    str | None,
    typer.Option(
        help="engine refuses bodies above this many MiB with 413 (default 2048)", show_default=False
    ),
]
SentHashesMax = Annotated[
    str | None, typer.Option(help="hash-only sent-hash LRU bound (default 16384)", show_default=False)
]
Codec = Annotated[
    str | None, typer.Option(help=f"body codec: {_choices(CODECS)} (default fast)", show_default=False)
]
Seed = Annotated[str | None, typer.Option(help="seed of images and tokens (default 0)", show_default=False)]


def _opt(text: str) -> Any:
    return typer.Option(help=text, show_default=False)


EngineEvictRate = Annotated[
    str | None, _opt("fault: drop each cached engine item with this probability per request (0)")
]
EngineRestartEvery = Annotated[
    str | None, _opt("fault: restart the engine process after every N requests (0 = never)")
]
EngineErrorRate = Annotated[str | None, _opt("fault: answer this fraction of requests with HTTP 500 (0)")]
EngineDelayMs = Annotated[str | None, _opt("fault: delay every engine request by this many ms (0)")]
RetryBudget = Annotated[str | None, _opt("client retries of a failed request before the rollout fails (8)")]
MaxInflightBuilds = Annotated[str | None, _opt("knob: cap on concurrent full-payload builds, 0 = no cap (0)")]
TrimAfterBuild = Annotated[
    str | None, _opt("knob: gc + malloc_trim after a build: auto (RSS grew >= 64 MB), always, off (off)")
]
MallocArenaMax = Annotated[str | None, _opt("knob: MALLOC_ARENA_MAX for the worker, 0 = glibc default (0)")]
MallocMmapThreshold = Annotated[
    str | None, _opt("knob: MALLOC_MMAP_THRESHOLD_ bytes for the worker, 0 = dynamic (0)")
]
Dtype = Annotated[str | None, _opt("knob: pixel_values dtype: float32, bfloat16 (float32)")]
Renderer = Annotated[
    str | None,
    _opt(f"who renders: {_choices(RENDERERS)} (the real library, pip install 'mmbench\\[renderers]') (sim)"),
]
Tokenizer = Annotated[
    str | None, _opt("renderers: a local Hugging Face tokenizer directory (default: one built in code)")
]

MaxMemory = Annotated[
    str | None,
    typer.Option(
        help="kill a worker whose RSS passes this (e.g. 16GiB; 0 = off; default 80 % of RAM)",
        show_default=False,
    ),
]


EngineUrl = Annotated[
    str | None,
    typer.Option(
        "--engine-url",
        help="use the engine at this URL (a vLLM, or `mmbench engine`) instead of starting one per point; "
        "it must answer GET /v1/models",
        show_default=False,
    ),
]


Engine = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="the engine started for each point: embedded (mmbench's own, the default) or vllm (a real "
        "vLLM OpenAI server from its own environment: make vllm)",
        show_default=False,
    ),
]
EngineModel = Annotated[
    str | None,
    _opt("--engine vllm: serve this Hugging Face model directory (dummy weights unless an --engine-arg "
         "says otherwise; default: a tiny model mmbench writes for the point's --model preset)"),
]  # fmt: skip
EngineArg = Annotated[
    list[str] | None,
    typer.Option(
        "--engine-arg",
        help="--engine vllm: an extra `vllm serve` flag, repeatable (e.g. --engine-arg=--max-num-seqs=8, "
        "--engine-arg '--mm-processor-cache-type shm'); a point parameter (engine_args)",
        show_default=False,
    ),
]
VllmPython = Annotated[
    str | None,
    _opt("--engine vllm: the vLLM environment's python (default: $MMBENCH_VLLM_PYTHON, else .venv-vllm)"),
]
EngineReadyTimeout = Annotated[
    float | None, _opt("--engine vllm: seconds a new vLLM may take to answer GET /health (300)")
]


def engine_choice(
    engine: str | None, model: str | None, python: str | None, ready_timeout: float | None,
    engine_url: str | None, scenario_engine: str | None = None,
) -> tuple[str, VllmOptions]:  # fmt: skip
    """The engine the points are started with, and vLLM's options; a one-line error for a mix that
    cannot be (flags of vLLM without it, or a URL beside an engine to start)."""
    name = check_engine_name(engine or scenario_engine or "embedded")
    if engine_url is not None and engine is not None:
        raise MmbenchError("--engine-url and --engine do not go together: the URL's engine serves the points")
    options = {"--engine-model": model, "--vllm-python": python, "--engine-ready-timeout": ready_timeout}
    given = [flag for flag, value in options.items() if value is not None]
    if given and name != VLLM:
        raise MmbenchError(f"{given[0]} is an option of --engine vllm; add --engine vllm")
    if ready_timeout is not None and not ready_timeout > 0:
        raise MmbenchError(f"--engine-ready-timeout must be a number of seconds > 0, got {ready_timeout}")
    vllm = VllmOptions(python, model, ready_timeout if ready_timeout is not None else READY_TIMEOUT_S)
    return (name if engine_url is None else "embedded"), vllm


def point_defaults(engine: str, args: list[str] | None) -> dict[str, Any]:
    """A single point's defaults from the engine options: --engine-arg, and vLLM's codec."""
    values = {**(VLLM_DEFAULTS if engine == VLLM else {}), **engine_arg_values(args)}
    return {k: v[0] for k, v in values.items()}


def engine_arg_values(args: list[str] | None) -> dict[str, list[Any]]:
    """--engine-arg (repeated) as the one engine_args value of every point: shell words joined."""
    if not args:
        return {}
    words: list[str] = []
    for arg in args:
        words += engine_arg_list(arg)
    return {"engine_args": [shlex.join(words)]}


def parse_max_memory(text: str | None) -> int | None:
    return None if text is None else parse_size(text, "--max-memory")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a sweep as Ctrl-C does: the point in flight is stopped, what finished is kept."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Every point parameter is a flag of the same name (`--image-size` for image_size), and a scenario key.
FLAG_FIELDS = {name: name for name in field_names()}

# The point flags every measuring command takes (run, sweep, profile), in --help order.
POINT_FLAGS: dict[str, Any] = {
    "mode": Mode, "rollouts": Rollouts, "turns": Turns, "images_per_turn": ImagesPerTurn,
    "image_size": ImageSize, "model": Model, "image_format": ImageFormat, "content": Content,
    "pool_size": PoolSize, "image_cache_max": ImageCacheMax, "engine_cache_gb": EngineCacheGb,
    "engine_max_body_mb": EngineMaxBodyMb, "sent_hashes_max": SentHashesMax, "codec": Codec, "seed": Seed,
    "engine_evict_rate": EngineEvictRate, "engine_restart_every": EngineRestartEvery,
    "engine_error_rate": EngineErrorRate, "engine_delay_ms": EngineDelayMs, "retry_budget": RetryBudget,
    "max_inflight_builds": MaxInflightBuilds, "trim_after_build": TrimAfterBuild,
    "malloc_arena_max": MallocArenaMax, "malloc_mmap_threshold": MallocMmapThreshold, "dtype": Dtype,
    "renderer": Renderer, "tokenizer": Tokenizer,
}  # fmt: skip


def with_point_flags(fn: Callable[..., R]) -> Callable[..., R]:
    """Give a command every point flag as an option of its own; it receives them as one dict,
    `point_flags` (flag -> text or None), so the long list is written once, here."""
    hints = get_type_hints(fn, include_extras=True)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(fn).parameters.values()
        if p.name != "point_flags"
    ]
    point = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in POINT_FLAGS.items()
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> R:
        flags = {name: kwargs.pop(name, None) for name in POINT_FLAGS}
        return fn(point_flags=flags, **kwargs)

    params = [*own[:1], *point, *own[1:]]  # a leading argument (sweep's scenario) stays first
    wrapper.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


_FIELD_TYPES = get_type_hints(PointConfig)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_one(name: str, text: str) -> Any:
    want = _FIELD_TYPES[FLAG_FIELDS[name]]
    text = text.strip()
    try:
        if want is int:
            return int(text)
        if want is float:
            return float(text)
    except ValueError:
        kind = "an integer" if want is int else "a number"
        raise MmbenchError(f"{_flag(name)}: {text!r} is not {kind}") from None
    if not text:
        raise MmbenchError(f"{_flag(name)}: empty value")
    return text


def point_values(flags: dict[str, str | None]) -> dict[str, list[Any]]:
    """Flag text -> {field: [values]}, for the flags that were given."""
    out: dict[str, list[Any]] = {}
    for name, text in flags.items():
        if text is None:
            continue
        values = [_parse_one(name, part) for part in text.split(",")]
        out[FLAG_FIELDS[name]] = values
    return out


def single_point(flags: dict[str, str | None], defaults: dict[str, Any] | None = None) -> PointConfig:
    values = point_values(flags)
    fields: dict[str, Any] = dict(defaults or {})
    for key, vals in values.items():
        if len(vals) != 1:
            raise MmbenchError(f"{_flag(key)}: one value for a single point (use `mmbench sweep` for a list)")
        fields[key] = vals[0]
    return PointConfig(**fields)


def runs_dir(name: str) -> Path:
    """The default output directory of a command: runs/NAME-UTCTIME."""
    return Path("runs") / f"{name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def exit_with(code: int) -> None:
    sys.stdout.flush()
    raise typer.Exit(code)
