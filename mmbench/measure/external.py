"""`--engine-url`: the checks made before any point runs against an engine mmbench did not start.

The engine must answer `GET /v1/models` (reachable, and vLLM-shaped), serve each point's model
under mmbench's name for it (a vLLM serves it so with `--served-model-name qwen3-vl`), and have room
for each point's longest prompt plus its completion. What only the embedded engine can do is
refused with a clear error: the faults (it would have to be told to evict, fail, delay or restart)
and raw-file (the client and the engine share one asset directory on this machine).
"""

from __future__ import annotations

from collections.abc import Iterable

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.facts import facts_of
from mmbench.world.engine.remote import EngineInfo, probe

# Point parameters that need the embedded engine, with the value that leaves them off.
EMBEDDED_ONLY = {
    "engine_evict_rate": 0.0, "engine_restart_every": 0, "engine_error_rate": 0.0, "engine_delay_ms": 0.0,
}  # fmt: skip


def refusal(config: PointConfig, info: EngineInfo) -> str | None:
    """Why this point cannot run against that engine, or None."""
    on = [name for name, off in EMBEDDED_ONLY.items() if getattr(config, name) != off]
    if on:
        names = ", ".join(on)
        return f"{names} need the embedded engine (its faults are injected there); leave out --engine-url"
    if facts_of(config).mode.media == "file":
        return (
            f"mode {config.mode} needs the embedded engine (the client and the engine share an asset "
            "directory on this machine); use mode raw with --engine-url"
        )
    if config.model not in info.max_model_len:
        served = ", ".join(sorted(info.max_model_len))
        return (
            f"the engine at {info.url} serves {served}, not {config.model!r}; serve the model under that "
            f"name (vllm serve ... --served-model-name {config.model})"
        )
    limit = info.max_model_len[config.model]
    need = facts_of(config).longest_request_tokens
    if limit is not None and need > limit:
        return (
            f"the point's last request needs {need} tokens (prompt and completion), more than the "
            f"engine's max_model_len {limit}; use fewer turns, images or a smaller image size"
        )
    return None


def check_engine(url: str, configs: Iterable[PointConfig]) -> EngineInfo:
    """Probe the engine once and check every point against it, before any point runs."""
    info = probe(url)
    for config in configs:
        reason = refusal(config, info)
        if reason is not None:
            raise MmbenchError(reason)
    return info
