"""Which engine serves a point, and how the harness gets one: the embedded engine (started for the
point), an external one by URL (`--engine-url`), or a real vLLM started for the point
(`--engine vllm`).

For vLLM the point's parameters become `vllm serve` flags: the point's model name is served under
mmbench's name for it, its engine cache is vLLM's multimodal processor cache
(`--mm-processor-cache-gb`), its longest request sets `--max-model-len`, its images per prompt and
size bound what vLLM profiles and warms up (`--limit-mm-per-prompt`, no video), raw-file's asset
directory is vLLM's `--allowed-local-media-path`, and the weights are dummy ones; the point's
`engine_args` come last, so they can change any of these (argparse keeps the last).

The engine is one value of a sum type, `EngineChoice`: made and checked once where it enters
(`choose_engine`, from the CLI's flags or mmbench.api's arguments), then asked what it means
(which engine the model predicts for, a point's defaults, the record's identity, how a point's
engine opens) rather than re-derived from names and optional fields at every layer. A fleet (several
engines behind a router) would be one more variant with the same methods.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Protocol

from mmbench.config import PointConfig, engine_arg_list
from mmbench.errors import MmbenchError
from mmbench.facts import facts_of
from mmbench.launch import StartMethod
from mmbench.measure.external import EMBEDDED_ONLY, check_engine
from mmbench.measure.fleet import Fleet, check_fleets
from mmbench.record import EngineRecord
from mmbench.transports.registry import TRANSPORTS
from mmbench.world.codec import get_codec
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess
from mmbench.world.engine.remote import EMBEDDED, RemoteEngine, normalize_url
from mmbench.world.engine.stats import EngineStats
from mmbench.world.engine.vllm.env import find_vllm
from mmbench.world.engine.vllm.model import check_model_dir, tiny_model
from mmbench.world.engine.vllm.server import READY_TIMEOUT_S, VllmEngine, check_engine_args

VLLM = "vllm"
ENGINES = (EMBEDDED, VLLM)  # the engines started for a point by name (--engine, a scenario's `engine`)
MIN_MODEL_LEN = 4096
MODEL_LEN_STEP = 1024


class EngineHandle(Protocol):
    """What the harness uses of a point's engine once opened, whichever it is."""

    @property
    def url(self) -> str | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def restarts(self) -> int | None: ...

    @property
    def flags(self) -> str | None: ...  # a real engine's command line, as recorded

    @property
    def failure(self) -> str | None: ...  # why it no longer serves (None while it does)

    def pids(self) -> list[int]: ...

    def stats(self, trim: bool = False) -> EngineStats | None: ...

    def alive(self) -> bool: ...

    def reset_peaks(self) -> None: ...

    def hwm(self) -> int | None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class ReusableHandle(EngineHandle, Protocol):
    """An engine that can serve several points in turn (mmbench.measure.engine_pool)."""

    def reset(self) -> None: ...  # between two points: empty its caches, give back what it can


def check_engine_name(name: str) -> str:
    if name not in ENGINES:
        raise MmbenchError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINES)}")
    return name


def vllm_refusal(config: PointConfig) -> str | None:
    on = [name for name, off in EMBEDDED_ONLY.items() if getattr(config, name) != off]
    if on:
        names = ", ".join(on)
        return f"{names} need the embedded engine (its faults are injected there); leave out --engine vllm"
    if TRANSPORTS[config.mode].renders and get_codec(config.codec).item_format != VLLM:
        return (
            f"mode {config.mode} ships processed items, and vLLM decodes only its own (msgpack "
            f"MultiModalKwargsItem): use --codec vllm, the default with --engine vllm, not {config.codec}"
        )
    return None


NO_DEFAULTS: Mapping[str, Any] = MappingProxyType({})
ASSETS_MARK = "<the engine's asset directory>"  # in an engine's key, where its own directory goes


@dataclass(frozen=True, slots=True)
class Embedded:
    """mmbench's own engine, started for every point."""

    served: ClassVar[str] = EMBEDDED  # the engine the model predicts for
    started: ClassVar[bool] = True  # mmbench starts it, so its death fails the point
    # started per point: it forks in a fraction of a second (mmbench.measure.engine_pool says why)
    reusable: ClassVar[bool] = False
    defaults: ClassVar[Mapping[str, Any]] = NO_DEFAULTS  # what it changes in a point's defaults

    def check(self, configs: Iterable[PointConfig]) -> None:
        """Every point fits the engine, before any runs."""
        configs = list(configs)
        check_fleets(self, configs)  # a point with replicas runs on a fleet of these (measure.fleet)
        for config in configs:
            if config.engine_args:
                raise MmbenchError(
                    f"engine_args ({config.engine_args}) are flags of a real vLLM; add --engine vllm"
                )

    def open(self, config: PointConfig, assets: Path | None, method: StartMethod) -> EngineHandle:
        """The point's engine, not yet started (the harness enters it)."""
        return EngineProcess(embedded_config(config, assets), start_method=method)

    def identity(self) -> EngineRecord:
        """What the point's record says served it (its figures are the harness's to add)."""
        return EngineRecord(kind=EMBEDDED)


@dataclass(frozen=True, slots=True)
class External:
    """An engine mmbench did not start, reached by URL (--engine-url): a vLLM, or `mmbench engine`."""

    url: str  # as normalize_url gives it (choose_engine makes it so)

    # the model predicts the client's side as with the embedded engine: the external engine's
    # memory is not the point's, and its death is recorded, not the point's failure
    served: ClassVar[str] = EMBEDDED
    started: ClassVar[bool] = False
    reusable: ClassVar[bool] = False  # not ours to start or reset
    defaults: ClassVar[Mapping[str, Any]] = NO_DEFAULTS

    def check(self, configs: Iterable[PointConfig]) -> None:
        configs = list(configs)
        check_fleets(self, configs)  # no replicas: not ours to start
        check_engine(self.url, configs)  # reachable, and fit for every point

    def open(self, config: PointConfig, assets: Path | None, method: StartMethod) -> EngineHandle:
        return RemoteEngine(self.url)

    def identity(self) -> EngineRecord:
        return EngineRecord(kind="external", url=self.url)


# The flags of vLLM's options, as the CLI names them (and so the messages, for the API too).
VLLM_FLAGS = {
    "model": "--engine-model", "python": "--vllm-python", "ready_timeout_s": "--engine-ready-timeout",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Vllm:
    """A real vLLM started for every point, from its own environment (--engine vllm)."""

    python: str | None = None  # --vllm-python: the vLLM environment's interpreter (None: found)
    model: str | None = None  # --engine-model: a model directory (None: the tiny one for the preset)
    ready_timeout_s: float | None = None  # --engine-ready-timeout (None: READY_TIMEOUT_S)

    served: ClassVar[str] = VLLM  # its predicted engine peak is vLLM's (mmbench.measure.model.vllm)
    started: ClassVar[bool] = True
    # the item format vLLM decodes: its codec, unless the point says otherwise
    defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({"codec": VLLM})

    def given(self) -> list[str]:
        """The flags of the options set here (None is not set)."""
        return [flag for name, flag in VLLM_FLAGS.items() if getattr(self, name) is not None]

    @property
    def timeout_s(self) -> float:
        return READY_TIMEOUT_S if self.ready_timeout_s is None else self.ready_timeout_s

    def check(self, configs: Iterable[PointConfig]) -> None:
        """Every point fits vLLM, and its environment (and model directory) is found and sound."""
        configs = list(configs)
        check_fleets(self, configs)
        for config in configs:
            reason = vllm_refusal(config)
            if reason is not None:
                raise MmbenchError(reason)
            check_engine_args(engine_arg_list(config.engine_args))
        if self.model is not None:
            check_model_dir(self.model)
        find_vllm(self.python)

    def open(self, config: PointConfig, assets: Path | None, method: StartMethod) -> EngineHandle:
        return self._vllm(config, assets)

    def _vllm(self, config: PointConfig, assets: Path | None) -> VllmEngine:
        env = find_vllm(self.python)
        model = check_model_dir(self.model) if self.model is not None else tiny_model(config.model, env)
        return VllmEngine(env, model, config.model, vllm_args(config, assets), self.timeout_s)

    def identity(self) -> EngineRecord:
        # the environment is probed once, then cached
        return EngineRecord(kind=VLLM, version=find_vllm(self.python).describe())

    # --- reuse across a sweep's points (mmbench.measure.engine_pool)
    reusable: ClassVar[bool] = True

    def key(self, config: PointConfig, file_assets: bool) -> Hashable:
        """What makes two points' engines the same: the model and every `vllm serve` flag (raw-file's
        asset directory is the engine's own, kept for its life)."""
        assets = Path(ASSETS_MARK) if file_assets else None
        return (self.python, self.model, config.model, *vllm_args(config, assets))

    def describe(self) -> str:
        return f"vLLM ({find_vllm(self.python).describe()})"

    def open_reusable(self, config: PointConfig, assets: Path | None) -> ReusableHandle:
        return self._vllm(config, assets)


# Which engine a point runs on: one value, one of these; a point with replicas runs on a Fleet of the
# chosen kind (mmbench.measure.fleet.fleet_for).
EngineChoice = Embedded | External | Vllm | Fleet


def choose_engine(
    name: str | None = None, url: str | None = None, vllm: Vllm | None = None, cluster: bool = False,
    default: str | None = None,
) -> EngineChoice:  # fmt: skip
    """The engine the points run on, from the user's choices: its name (--engine; else `default`,
    a scenario's, else embedded), an external engine's URL (--engine-url), vLLM's options, and
    whether a cluster measures. The one place these are checked, for the CLI and mmbench.api alike:
    a mix that cannot be is a one-line error (exit 2). Whether the points fit it is the value's
    `check`, once per sweep (mmbench.sweep.loop) or single point."""
    chosen = check_engine_name(name or default or EMBEDDED)
    options = vllm or Vllm()
    if url is not None and name is not None:
        raise MmbenchError("--engine-url and --engine do not go together: the URL's engine serves the points")
    given = options.given()
    if given and chosen != VLLM:
        raise MmbenchError(f"{given[0]} is an option of --engine vllm; add --engine vllm")
    if options.ready_timeout_s is not None and not options.ready_timeout_s > 0:
        raise MmbenchError(
            f"--engine-ready-timeout must be a number of seconds > 0, got {options.ready_timeout_s:g}"
        )
    if url is not None:  # the URL's engine serves, whatever engine a scenario names
        if cluster:
            raise MmbenchError(
                "--engine-url and --cluster do not go together: an external engine serves one client"
            )
        return External(normalize_url(url))
    if chosen == VLLM:
        if cluster:
            raise MmbenchError(
                "--engine vllm and --cluster do not go together yet: each point's vLLM runs beside its worker"
            )
        return options
    return Embedded()


def model_len(config: PointConfig) -> int:
    """--max-model-len: the point's longest request, rounded up (vLLM allocates for it)."""
    need = facts_of(config).longest_request_tokens
    return max(MIN_MODEL_LEN, -(-need // MODEL_LEN_STEP) * MODEL_LEN_STEP)


def vllm_args(config: PointConfig, assets: Path | None) -> list[str]:
    """The `vllm serve` flags of a point (after the model; host, port and middleware are the server's)."""
    w, h = config.image_wh
    images = config.turns * config.images_per_turn
    limits = {"image": {"count": images, "width": w, "height": h}, "video": 0}
    args = [
        "--enable-scale-out",  # POST /inference/v1/generate answers 403 without it
        "--load-format", "dummy", "--enforce-eager", "--dtype", "bfloat16",
        "--max-model-len", str(model_len(config)),
        "--mm-processor-cache-gb", f"{config.engine_cache_gb:g}",
        "--limit-mm-per-prompt", json.dumps(limits, separators=(",", ":")),
    ]  # fmt: skip
    if assets is not None:
        args += ["--allowed-local-media-path", str(assets)]
    return args + engine_arg_list(config.engine_args)


# What a standalone vLLM (`mmbench engine --vllm`) is sized for, as if for a point of this shape:
# up to 32 images of up to 1024x1024 a prompt (--engine-arg changes any of it).
STANDALONE_SHAPE = {"turns": 32, "image_size": "1024"}


def standalone_vllm(
    preset: str, cache_gb: float, vllm: Vllm, extra: list[str], host: str, port: int
) -> VllmEngine:
    """A vLLM to serve on its own until stopped (not yet started)."""
    config = PointConfig(model=preset, engine_cache_gb=cache_gb, **STANDALONE_SHAPE)  # type: ignore[arg-type]
    check_engine_args(extra)
    env = find_vllm(vllm.python)
    model = check_model_dir(vllm.model) if vllm.model is not None else tiny_model(preset, env)
    return VllmEngine(env, model, preset, vllm_args(config, None) + extra, vllm.timeout_s, host, port)


def embedded_config(config: PointConfig, assets: Path | None = None) -> EngineConfig:
    return EngineConfig(
        cache_bytes=config.engine_cache_bytes, max_body_bytes=config.engine_max_body_bytes, seed=config.seed,
        evict_rate=config.engine_evict_rate, error_rate=config.engine_error_rate,
        delay_ms=config.engine_delay_ms, restart_every=config.engine_restart_every,
        allowed_media_dir=str(assets) if assets else None, dtype=config.dtype,
    )  # fmt: skip
