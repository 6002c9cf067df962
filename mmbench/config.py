"""One point's parameters: the single definition that the CLI, scenario files, the worker and the
results share. Validation lives here so that every entry point gives the same one-line errors."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields
from typing import Any, get_type_hints

from mmbench.errors import MmbenchError
from mmbench.transports.base import DEFAULT_SENT_HASHES_MAX
from mmbench.transports.registry import MODES, check_mode
from mmbench.units import GIB, MIB
from mmbench.world.codec import CODECS, DEFAULT_CODEC
from mmbench.world.geometry import DEFAULT_MODEL, get_geometry, parse_image_size
from mmbench.world.images import CONTENTS, IMAGE_FORMATS

MAX_ROLLOUTS = 100_000
TRIM_POLICIES = ("off", "auto", "always")
DTYPES = ("float32", "bfloat16")
# Who renders each turn: mmbench's simulation, or the real `renderers` library (mmbench[renderers]).
RENDERERS = ("sim", "renderers")
MAX_TURNS = 10_000
# The stage after the rollouts (issue 31, mmbench.trainer): off, or the trainer ranks' materialization
# policy: eager (the whole step's pixels up front: prime-rl main), lazy (per micro-batch: prime-rl
# PR #3320), or both (each rank's batch materialized once per policy, in separate processes).
TRAINER_POLICIES = ("off", "eager", "lazy", "both")
REDERIVE_PLACES = ("orchestrator", "trainer")  # ephemeral modes: where pixels are derived again
DEDUP_CHOICES = ("off", "on")
# Fields added to schema 6 after files were written with it: a point that lacks one ran with its default.
LATER_FIELDS = (
    "trainer", "rederive_at", "dp_ranks", "group_size", "dedup", "seq_len", "model_parallel",  # issue 31
    "replicas", "router", "router_policy", "session_header", "router_retries",  # issue 30
    "kill_replica_at_turn",
)  # fmt: skip
# --- a fleet (issue 30): replicas behind a router that mmbench starts for the point
MAX_REPLICAS = 16
ROUTERS = ("vllm-router",)  # PyPI vllm-router (vllm-project/router), pinned in pyproject.toml
# vllm-router 0.1.17's policies that apply to independent replicas (kv_aware needs vLLM's KV events
# and a text-only model; it is left out)
ROUTER_POLICIES = (
    "round_robin", "random", "power_of_two", "cache_aware", "consistent_hash", "sticky_least_loaded",
)  # fmt: skip
ON_OFF = ("on", "off")
# What a fleet point sets that a single engine does not have (they need replicas >= 1).
FLEET_ONLY = {"router": "vllm-router", "router_policy": "cache_aware", "router_retries": "on",
              "kill_replica_at_turn": 0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PointConfig:
    mode: str = "full"
    rollouts: int = 1
    turns: int = 8
    images_per_turn: int = 1
    image_size: str = "512"
    model: str = DEFAULT_MODEL
    image_format: str = "png"
    content: str = "photo"
    pool_size: int = 1
    image_cache_max: int = 32
    engine_cache_gb: float = 4.0
    engine_max_body_mb: int = 2048
    sent_hashes_max: int = DEFAULT_SENT_HASHES_MAX
    codec: str = DEFAULT_CODEC
    text_tokens_per_turn: int = 32
    completion_tokens: int = 16
    seed: int = 0
    # --- engine faults (each off at its default)
    engine_evict_rate: float = 0.0  # each cached item dropped with this probability per request
    engine_restart_every: int = 0  # the engine process restarts after every N requests
    engine_error_rate: float = 0.0  # this fraction of requests answered with HTTP 500
    engine_delay_ms: float = 0.0  # added to every request, so that many are in flight at once
    retry_budget: int = 8  # client retries of a failed request (not counting the hash-only resend)
    # --- the knobs real clients turn
    max_inflight_builds: int = 0  # cap on concurrent full-payload builds; 0 = no cap
    trim_after_build: str = "off"  # gc.collect() + malloc_trim(0) after a build: auto, always, off
    malloc_arena_max: int = 0  # MALLOC_ARENA_MAX for the worker; 0 = glibc's default
    malloc_mmap_threshold: int = 0  # MALLOC_MMAP_THRESHOLD_ (bytes) for the worker; 0 = dynamic
    dtype: str = "float32"  # pixel_values dtype: float32 or bfloat16
    # --- the renderer backend (issue 11)
    renderer: str = "sim"  # sim: mmbench's simulated world; renderers: the real library's objects
    tokenizer: str = ""  # renderers: a local Hugging Face tokenizer directory ("" = one built in code)
    # --- a real engine (issue 19): extra `vllm serve` flags, shell-quoted ("" = none; --engine vllm only)
    engine_args: str = ""
    # --- after the rollout (issue 31): an orchestrator and one trainer stand-in per DP rank
    trainer: str = "off"  # off, eager, lazy, both (see TRAINER_POLICIES)
    rederive_at: str = "orchestrator"  # ephemeral modes: orchestrator (ships pixels) or trainer (refs)
    dp_ranks: int = 2  # trainer data-parallel ranks, one process each
    group_size: int = 1  # G rollouts of a group share their first turn's images (GRPO)
    dedup: str = "off"  # on: the orchestrator ships each distinct image once per rank
    seq_len: int = 0  # a micro-batch's token cap (first-fit packing); 0: the longest sample's length
    model_parallel: int = 8  # TP x CP x EP ranks per DP rank: extrapolated, never run
    # --- a fleet (issue 30): `replicas` engines (embedded or vLLM) behind a router mmbench starts
    replicas: int = 0  # 0: one engine, no router
    router: str = "vllm-router"
    router_policy: str = "cache_aware"  # the router's own default
    # on: every request carries X-Session-ID = the rollout's id (as prime-rl and SkyRL send it);
    # also to an --engine-url that is a router of the user's
    session_header: str = "off"
    router_retries: str = "on"  # on: the router's retries and circuit breaker as it ships them; off: neither
    kill_replica_at_turn: int = 0  # replica 1 is killed once the rollouts reach this turn (0: never)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def image_wh(self) -> tuple[int, int]:
        return parse_image_size(self.image_size)

    @property
    def engine_cache_bytes(self) -> int:
        return int(self.engine_cache_gb * GIB)

    @property
    def engine_max_body_bytes(self) -> int:
        return self.engine_max_body_mb * MIB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "point") -> PointConfig:
        known = field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MmbenchError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
        return cls(**{k: coerce(k, v, where) for k, v in data.items()})


def field_names() -> list[str]:
    return [f.name for f in fields(PointConfig)]


_TYPES: dict[str, type] = get_type_hints(PointConfig)


def coerce(key: str, value: Any, where: str = "point") -> Any:
    """Accept a value of the field's type (an int for a float field too); reject anything else."""
    want = _TYPES[key]
    if key == "image_size" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, want):
        raise MmbenchError(f"{where}: {key} must be {want.__name__}, got {value!r}")
    return value


def _at_least(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise MmbenchError(f"{name} must be {bound}, got {value}")


def validate(c: PointConfig) -> None:
    check_mode(c.mode)
    get_geometry(c.model)
    _at_least("rollouts", c.rollouts, 1, MAX_ROLLOUTS)
    _at_least("turns", c.turns, 1, MAX_TURNS)
    _at_least("images_per_turn", c.images_per_turn, 1, 64)
    _at_least("pool_size", c.pool_size, 1, 256)
    _at_least("image_cache_max", c.image_cache_max, 0)
    _at_least("sent_hashes_max", c.sent_hashes_max, 1)
    _at_least("text_tokens_per_turn", c.text_tokens_per_turn, 0)
    _at_least("completion_tokens", c.completion_tokens, 1)
    _at_least("seed", c.seed, 0)
    _at_least("engine_max_body_mb", c.engine_max_body_mb, 1, 1_000_000)
    if not (c.engine_cache_gb >= 0 and c.engine_cache_gb < 1e6):
        raise MmbenchError(
            f"engine_cache_gb must be >= 0 (0 disables the engine cache), got {c.engine_cache_gb}"
        )
    if c.image_format not in IMAGE_FORMATS:
        raise MmbenchError(
            f"unknown image_format {c.image_format!r}; choose one of: {', '.join(IMAGE_FORMATS)}"
        )
    if c.content not in CONTENTS:
        raise MmbenchError(f"unknown content {c.content!r}; choose one of: {', '.join(CONTENTS)}")
    if c.codec not in CODECS:
        raise MmbenchError(f"unknown codec {c.codec!r}; choose one of: {', '.join(CODECS)}")
    parse_image_size(c.image_size)
    for name in ("engine_evict_rate", "engine_error_rate"):
        rate = getattr(c, name)
        if not 0.0 <= rate <= 1.0:
            raise MmbenchError(f"{name} must be a probability between 0 and 1, got {rate}")
    _at_least("engine_restart_every", c.engine_restart_every, 0)
    if not 0.0 <= c.engine_delay_ms <= 60_000:
        raise MmbenchError(f"engine_delay_ms must be between 0 and 60000, got {c.engine_delay_ms}")
    _at_least("retry_budget", c.retry_budget, 0, 100)
    _at_least("max_inflight_builds", c.max_inflight_builds, 0, 10_000)
    if c.trim_after_build not in TRIM_POLICIES:
        raise MmbenchError(
            f"unknown trim_after_build {c.trim_after_build!r}; choose one of: {', '.join(TRIM_POLICIES)}"
        )
    _at_least("malloc_arena_max", c.malloc_arena_max, 0, 1024)
    # glibc refuses a fixed mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
    _at_least("malloc_mmap_threshold", c.malloc_mmap_threshold, 0, 32 * MIB)
    if c.dtype not in DTYPES:
        raise MmbenchError(f"unknown dtype {c.dtype!r}; choose one of: {', '.join(DTYPES)}")
    _validate_renderer(c)
    engine_arg_list(c.engine_args)
    _validate_trainer(c)
    _validate_fleet(c)


def _validate_trainer(c: PointConfig) -> None:
    for name, value, choices in (
        ("trainer", c.trainer, TRAINER_POLICIES), ("rederive_at", c.rederive_at, REDERIVE_PLACES),
        ("dedup", c.dedup, DEDUP_CHOICES),
    ):  # fmt: skip
        if value not in choices:
            raise MmbenchError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    _at_least("dp_ranks", c.dp_ranks, 1, 64)
    _at_least("group_size", c.group_size, 1, MAX_ROLLOUTS)
    _at_least("seq_len", c.seq_len, 0, 10_000_000)
    _at_least("model_parallel", c.model_parallel, 1, 4096)
    if c.rederive_at != "orchestrator" and not c.mode.startswith("ephemeral"):
        raise MmbenchError(
            f"rederive_at applies to the ephemeral modes only (mode {c.mode} keeps what the trainer gets)"
        )
    if c.trainer != "off" and c.renderer != "sim":
        raise MmbenchError("the trainer stage reads the sim renderer's trajectories; use --renderer sim")


def _validate_fleet(c: PointConfig) -> None:
    _at_least("replicas", c.replicas, 0, MAX_REPLICAS)
    for name, choices in (("router", ROUTERS), ("router_policy", ROUTER_POLICIES),
                          ("session_header", ON_OFF), ("router_retries", ON_OFF)):  # fmt: skip
        if getattr(c, name) not in choices:
            raise MmbenchError(f"unknown {name} {getattr(c, name)!r}; choose one of: {', '.join(choices)}")
    _at_least("kill_replica_at_turn", c.kill_replica_at_turn, 0, c.turns)
    if c.replicas == 0:
        given = [name for name, default in FLEET_ONLY.items() if getattr(c, name) != default]
        if given:
            raise MmbenchError(
                f"{given[0]} is a setting of a fleet; add --replicas R (R >= 1 engines behind the router)"
            )
    if c.kill_replica_at_turn and c.replicas < 2:
        raise MmbenchError("kill_replica_at_turn needs replicas >= 2 (one must survive to serve on)")


def engine_arg_list(text: str) -> list[str]:
    """A point's engine_args as the argument list vLLM gets (shell quoting, as a shell splits it)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise MmbenchError(f"engine_args {text!r} cannot be split as shell words ({exc})") from None


def _validate_renderer(c: PointConfig) -> None:
    """The point's own consistency only: whether the library is installed and the tokenizer
    directory exists is checked where points run (mmbench.backends.check_runnable), so that a
    results file made elsewhere still loads."""
    if c.renderer not in RENDERERS:
        raise MmbenchError(f"unknown renderer {c.renderer!r}; choose one of: {', '.join(RENDERERS)}")
    if c.tokenizer and c.renderer != "renderers":
        raise MmbenchError(
            "tokenizer is used by --renderer renderers only (the sim renderer tokenizes nothing)"
        )
    if c.renderer == "renderers":
        if c.image_cache_max < 1:
            # renderers 0.1.12 evicts before inserting (`pop(next(iter(cache)))`): a bound of 0 raises
            raise MmbenchError(
                "image_cache_max must be >= 1 with --renderer renderers (the library cannot turn it off)"
            )
        if c.dtype != "float32":
            raise MmbenchError(
                "dtype bfloat16 is a sim knob; the renderers library returns float32 pixel_values"
            )


__all__ = ["LATER_FIELDS", "MODES", "PointConfig", "coerce", "field_names", "validate"]
