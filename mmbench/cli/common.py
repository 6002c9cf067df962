"""What every command shares: the one error edge, consoles, and the point flags."""

from __future__ import annotations

import contextlib
import functools
import inspect
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar, get_type_hints

import typer
from rich.console import Console

from mmbench.config import RENDERERS, ROUTER_POLICIES, ROUTERS, PointConfig, engine_arg_list, field_names
from mmbench.errors import MmbenchError
from mmbench.measure.engines import VLLM, EngineChoice, Vllm, choose_engine
from mmbench.transports.registry import MODES
from mmbench.units import parse_size
from mmbench.world.codec import CODECS
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


def _opt(text: str) -> Any:
    return typer.Option(help=text, show_default=False)


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
# The other point flags (each an option with its help and nothing else), in --help order.
POINT_HELP = {
    "turns": "N: turns per rollout (default 8)",
    "images_per_turn": "new images per turn (default 1)",
    "image_size": "source side or WIDTHxHEIGHT (default 512)",
    "model": f"geometry preset: {_choices(MODELS)} (default qwen3-vl)",
    "image_format": f"source encoding: {_choices(IMAGE_FORMATS)} (default png)",
    "content": f"source content (sets compressibility): {_choices(CONTENTS)} (default photo)",
    "pool_size": "renderers in the pool (default 1)",
    "image_cache_max": "renderer FIFO cache entries, 0 = off (default 32)",
    "engine_cache_gb": "engine mm cache GiB, 0 = none (default 4)",
    "engine_max_body_mb": "engine refuses bodies above this many MiB with 413 (default 2048)",
    "sent_hashes_max": "hash-only sent-hash LRU bound (default 16384)",
    "codec": f"body codec: {_choices(CODECS)} (default fast)",
    "seed": "seed of images and tokens (default 0)",
    "engine_evict_rate": "fault: drop each cached engine item with this probability per request (0)",
    "engine_restart_every": "fault: restart the engine process after every N requests (0 = never)",
    "engine_error_rate": "fault: answer this fraction of requests with HTTP 500 (0)",
    "engine_delay_ms": "fault: delay every engine request by this many ms (0)",
    "retry_budget": "client retries of a failed request before the rollout fails (8)",
    "max_inflight_builds": "knob: cap on concurrent full-payload builds, 0 = no cap (0)",
    "trim_after_build": "knob: gc + malloc_trim after a build: auto (RSS grew >= 64 MB), always, off (off)",
    "malloc_arena_max": "knob: MALLOC_ARENA_MAX for the worker, 0 = glibc default (0)",
    "malloc_mmap_threshold": "knob: MALLOC_MMAP_THRESHOLD_ bytes for the worker, 0 = dynamic (0)",
    "dtype": "knob: pixel_values dtype: float32, bfloat16 (float32)",
    "renderer": f"who renders: {_choices(RENDERERS)} (the real library, pip install "
    "'mmbench\\[renderers]') (sim)",
    "tokenizer": "renderers: a local Hugging Face tokenizer directory (default: one built in code)",
    "trainer": "after the rollouts, an orchestrator and trainer ranks: off, eager (pixels up front), lazy "
    "(per micro-batch), both (off)",
    "rederive_at": "ephemeral modes: re-derive pixels at the orchestrator or the trainer (orchestrator)",
    "dp_ranks": "trainer data-parallel ranks, one process each (2)",
    "group_size": "G: rollouts of a group share their first turn's images (1)",
    "dedup": "the orchestrator ships each distinct image once per rank: on, off (off)",
    "seq_len": "trainer micro-batch token cap, 0 = the longest sample (0)",
    "model_parallel": "TP x CP x EP ranks per DP rank, extrapolated (8)",
    "replicas": "fleet: R engines (--engine's kind) behind a router started per point, 0 = one engine (0)",
    "router": f"fleet: the router: {_choices(ROUTERS)} (vllm-router)",
    "router_policy": f"fleet: the router's policy: {_choices(ROUTER_POLICIES)} (cache_aware)",
    "session_header": "X-Session-ID = the rollout's id on every request: on, off (off)",
    "router_retries": "fleet: the router's retries and circuit breaker as shipped (on) or disabled (off)",
    "kill_replica_at_turn": "fleet: kill replica 1 once the rollouts reach this turn, 0 = never (0)",
}
Model = Annotated[str | None, _opt(POINT_HELP["model"])]  # mmbench engine's --model too

MaxMemory = Annotated[
    str | None,
    typer.Option(
        help="kill a worker whose RSS passes this (e.g. 16GiB; 0 = off; default 80 % of RAM)",
        show_default=False,
    ),
]


# The engine flags, shared by every command that takes an engine (each takes the ones it uses, in
# this order, as one EngineFlags: with_engine_flags), and made into the engine by EngineFlags.choose.
EngineUrl = Annotated[
    str | None,
    typer.Option(
        "--engine-url",
        help="use the engine at this URL (a vLLM, or `mmbench engine`) instead of starting one per point; "
        "it must answer GET /v1/models",
        show_default=False,
    ),
]
EngineName = Annotated[
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
FreshEngine = Annotated[
    bool | None,
    typer.Option(
        "--fresh-engine",
        help="--engine vllm: start a vLLM for every point and stop it after, instead of one per engine "
        "configuration, warmed for each mode and reset between points (docs/vllm.md)",
        show_default=False,
    ),
]
ENGINE_FLAGS: dict[str, Any] = {
    "engine_url": EngineUrl, "engine": EngineName, "engine_model": EngineModel, "engine_arg": EngineArg,
    "vllm_python": VllmPython, "engine_ready_timeout": EngineReadyTimeout, "fresh_engine": FreshEngine,
}  # fmt: skip
# A single point's (run, profile): its engine is started for it alone anyway.
POINT_ENGINE_FLAGS = tuple(name for name in ENGINE_FLAGS if name != "fresh_engine")


@dataclass(frozen=True, slots=True)
class EngineFlags:
    """The engine flags of a command as given (None: not given, or not a flag of that command)."""

    engine_url: str | None = None
    engine: str | None = None
    engine_model: str | None = None
    engine_arg: list[str] | None = None
    vllm_python: str | None = None
    engine_ready_timeout: float | None = None
    fresh_engine: bool | None = None

    @property
    def fresh(self) -> bool:
        return bool(self.fresh_engine)

    @property
    def vllm(self) -> Vllm:
        return Vllm(self.vllm_python, self.engine_model, self.engine_ready_timeout)

    def choose(self, cluster: bool = False, scenario: str | None = None) -> EngineChoice:
        """The engine the points run on (checked as mmbench.api checks it: the same messages)."""
        return choose_engine(self.engine, self.engine_url, self.vllm, cluster, scenario)

    def vllm_only(self) -> Vllm:
        """vLLM's options, checked, for a command that starts only vLLMs (compat, engine --vllm)."""
        chosen = choose_engine(VLLM, vllm=self.vllm)
        assert isinstance(chosen, Vllm)
        return chosen

    def given(self) -> list[str]:
        """The vLLM flags given (not --engine or --engine-url)."""
        return self.vllm.given() + (["--engine-arg"] if self.engine_arg is not None else [])

    def engine_arg_words(self) -> list[str]:
        """--engine-arg (repeated) as one list of shell words."""
        words: list[str] = []
        for arg in self.engine_arg or []:
            words += engine_arg_list(arg)
        return words

    def engine_args(self) -> dict[str, list[Any]]:
        """--engine-arg as the one engine_args value of every point: its shell words joined."""
        return {"engine_args": [shlex.join(self.engine_arg_words())]} if self.engine_arg else {}

    def point_defaults(self, engine: EngineChoice) -> dict[str, Any]:
        """A single point's defaults from the engine options: the engine's own, and --engine-arg."""
        return {**engine.defaults, **{k: v[0] for k, v in self.engine_args().items()}}


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
    "mode": Mode, "rollouts": Rollouts,
    **{name: Annotated[str | None, _opt(text)] for name, text in POINT_HELP.items()},
}  # fmt: skip


def _with_flags(
    fn: Callable[..., R], flags: dict[str, Any], param: str, make: Callable[[dict[str, Any]], Any],
    at: int | None,
) -> Callable[..., R]:  # fmt: skip
    """Give a command each of `flags` as an option of its own (at position `at` of its own options,
    None: last), and pass them to it as one value, `param`: make(flag -> value or None)."""
    hints = get_type_hints(fn, include_extras=True)
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(fn).parameters.values()
        if p.name != param
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in flags.items()
    ]

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> R:
        values = {name: kwargs.pop(name, None) for name in flags}
        return fn(**{param: make(values)}, **kwargs)

    at = len(own) if at is None else at
    params = [*own[:at], *added, *own[at:]]
    wrapper.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def with_point_flags(fn: Callable[..., R]) -> Callable[..., R]:
    """Give a command every point flag as an option of its own; it receives them as one dict,
    `point_flags` (flag -> text or None), so the long list is written once, here. A leading
    argument (sweep's scenario) stays first."""
    return _with_flags(fn, POINT_FLAGS, "point_flags", dict, 1)


def with_engine_flags(*names: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the engine flags `names` (all when none are named) as its last options; it
    receives them as one EngineFlags, `engine_flags`."""
    chosen = {name: ENGINE_FLAGS[name] for name in names or ENGINE_FLAGS}

    def decorate(fn: Callable[..., R]) -> Callable[..., R]:
        return _with_flags(fn, chosen, "engine_flags", lambda values: EngineFlags(**values), None)

    return decorate


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
