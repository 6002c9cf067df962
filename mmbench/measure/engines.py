"""Which engine serves a point, and how the harness gets one: the embedded engine (started for the
point), an external one by URL (`--engine-url`), or a real vLLM started for the point
(`--engine vllm`).

For vLLM the point's parameters become `vllm serve` flags: the point's model name is served under
mmbench's name for it, its engine cache is vLLM's multimodal processor cache
(`--mm-processor-cache-gb`), its longest request sets `--max-model-len`, its images per prompt and
size bound what vLLM profiles and warms up (`--limit-mm-per-prompt`, no video), raw-file's asset
directory is vLLM's `--allowed-local-media-path`, and the weights are dummy ones; the point's
`engine_args` come last, so they can change any of these (argparse keeps the last).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from mmbench.config import PointConfig, engine_arg_list
from mmbench.errors import MmbenchError
from mmbench.launch import StartMethod
from mmbench.measure.external import EMBEDDED_ONLY, longest_request_tokens
from mmbench.transports.registry import TRANSPORTS
from mmbench.world.codec import get_codec
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess
from mmbench.world.engine.remote import RemoteEngine
from mmbench.world.engine.stats import EngineStats
from mmbench.world.engine.vllm.env import VllmEnv, find_vllm
from mmbench.world.engine.vllm.model import check_model_dir, tiny_model
from mmbench.world.engine.vllm.server import READY_TIMEOUT_S, VllmEngine, check_engine_args

ENGINES = ("embedded", "vllm")
VLLM = "vllm"
MIN_MODEL_LEN = 4096
MODEL_LEN_STEP = 1024


class Engine(Protocol):
    """What the harness uses of an engine, whichever it is."""

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


@dataclass(frozen=True, slots=True)
class VllmOptions:
    python: str | None = None  # --vllm-python: the vLLM environment's interpreter (None: found)
    model: str | None = None  # --engine-model: a model directory (None: the tiny one for the preset)
    ready_timeout_s: float = READY_TIMEOUT_S  # --engine-ready-timeout


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


# What --engine vllm changes in a point's defaults: the item format vLLM decodes.
VLLM_DEFAULTS: dict[str, list[Any]] = {"codec": [VLLM]}


def check_points(engine: str, vllm: VllmOptions, configs: Iterable[PointConfig]) -> VllmEnv | None:
    """Every point fits the engine, before any runs; for vLLM, its environment (found and checked)."""
    check_engine_name(engine)
    configs = list(configs)
    if engine != VLLM:
        for config in configs:
            if config.engine_args:
                raise MmbenchError(
                    f"engine_args ({config.engine_args}) are flags of a real vLLM; add --engine vllm"
                )
        return None
    for config in configs:
        reason = vllm_refusal(config)
        if reason is not None:
            raise MmbenchError(reason)
        check_engine_args(engine_arg_list(config.engine_args))
    if vllm.model is not None:
        check_model_dir(vllm.model)
    return find_vllm(vllm.python)


def model_len(config: PointConfig) -> int:
    """--max-model-len: the point's longest request, rounded up (vLLM allocates for it)."""
    need = longest_request_tokens(config)
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


def start_vllm(config: PointConfig, assets: Path | None, vllm: VllmOptions) -> VllmEngine:
    env = find_vllm(vllm.python)
    model = check_model_dir(vllm.model) if vllm.model is not None else tiny_model(config.model, env)
    return VllmEngine(env, model, config.model, vllm_args(config, assets), vllm.ready_timeout_s)


# What a standalone vLLM (`mmbench engine --vllm`) is sized for, as if for a point of this shape:
# up to 32 images of up to 1024x1024 a prompt (--engine-arg changes any of it).
STANDALONE_SHAPE = {"turns": 32, "image_size": "1024"}


def standalone_vllm(
    preset: str, cache_gb: float, vllm: VllmOptions, extra: list[str], host: str, port: int
) -> VllmEngine:
    """A vLLM to serve on its own until stopped (not yet started)."""
    config = PointConfig(model=preset, engine_cache_gb=cache_gb, **STANDALONE_SHAPE)  # type: ignore[arg-type]
    check_engine_args(extra)
    env = find_vllm(vllm.python)
    model = check_model_dir(vllm.model) if vllm.model is not None else tiny_model(preset, env)
    return VllmEngine(env, model, preset, vllm_args(config, None) + extra, vllm.ready_timeout_s, host, port)


def open_engine(
    config: PointConfig, assets: Path | None, method: StartMethod, engine: str, engine_url: str | None,
    vllm: VllmOptions,
) -> Engine:  # fmt: skip
    """The point's engine, not yet started (the harness enters it)."""
    if engine_url is not None:
        return RemoteEngine(engine_url)
    if engine == VLLM:
        return start_vllm(config, assets, vllm)
    return EngineProcess(embedded_config(config, assets), start_method=method)


def embedded_config(config: PointConfig, assets: Path | None = None) -> EngineConfig:
    return EngineConfig(
        cache_bytes=config.engine_cache_bytes, max_body_bytes=config.engine_max_body_bytes, seed=config.seed,
        evict_rate=config.engine_evict_rate, error_rate=config.engine_error_rate,
        delay_ms=config.engine_delay_ms, restart_every=config.engine_restart_every,
        allowed_media_dir=str(assets) if assets else None, dtype=config.dtype,
    )  # fmt: skip
