"""Older results files, lifted one schema version at a time to this one.

v1 to v5 kept a point as one flat object; v6 nests it by what each figure describes
(mmbench.record). `V5_PATHS` names where each v5 field lives now: the v5 -> v6 step, the CSV
reader of old tables and the tests' flat record builder all go through it, so it is the one
statement of the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmbench.config import field_names

# v5 field -> its dotted path in a v6 point. Config fields move under "config" (see _v5_point);
# `engine` and the three per-kind peaks are folded by hand (see _v5_engine).
V5_PATHS: dict[str, str] = {
    "repeat": "repeat", "status": "status", "cause": "cause",
    # the client
    "rss_baseline_bytes": "client.rss.baseline_bytes",
    "rss_baseline_trim_floor_bytes": "client.rss.baseline_trim_floor_bytes",
    "rss_peak_bytes": "client.rss.peak_bytes",
    "rss_retained_bytes": "client.rss.retained_bytes",
    "rss_retained_trimmed_bytes": "client.rss.retained_trimmed_bytes",
    "rss_released_bytes": "client.rss.released_bytes",
    "rss_released_trimmed_bytes": "client.rss.released_trimmed_bytes",
    "uss_retained_bytes": "client.rss.uss_retained_bytes",
    "peak_method": "client.rss.peak_method",
    "retained_bytes": "client.retained_bytes",
    "retained_live_bytes": "client.retained_live_bytes",
    "allocator_retention_bytes": "client.allocator_retention_bytes",
    "peak_bytes": "client.peak_bytes",
    "released_bytes": "client.released_bytes",
    "client_cpu_s": "client.cpu_s",
    "memray_peak_bytes": "client.memray_peak_bytes",
    "stored_pixel_bytes": "client.accounting.stored_pixel_bytes",
    "source_bytes": "client.accounting.source_bytes",
    "descriptor_bytes": "client.accounting.descriptor_bytes",
    "other_bytes": "client.accounting.other_bytes",
    "renderer_cache_bytes": "client.accounting.renderer_cache_bytes",
    "renderer_cache_only_bytes": "client.accounting.renderer_cache_only_bytes",
    "live_data_bytes": "client.accounting.live_data_bytes",
    "renderer_cache_hits": "client.rendering.cache_hits",
    "renderer_cache_misses": "client.rendering.cache_misses",
    "rederived": "client.rendering.rederived",
    "trims_after_build": "client.rendering.trims_after_build",
    "image_tokens": "client.rendering.image_tokens",
    "prompt_tokens": "client.rendering.prompt_tokens",
    "pixel_shapes": "client.rendering.pixel_shapes",
    "sidecar_digest": "client.rendering.sidecar_digest",
    "env_malloc_mmap_threshold": "client.allocator.malloc_mmap_threshold",
    "env_malloc_arena_max": "client.allocator.malloc_arena_max",
    "glibc": "client.allocator.glibc",
    # the wire
    "requests": "traffic.requests",
    "bytes_shipped": "traffic.bytes_shipped",
    "bytes_per_turn": "traffic.bytes_per_turn",
    "full_items_sent": "traffic.full_items_sent",
    "null_items_sent": "traffic.null_items_sent",
    "media_items_sent": "traffic.media_items_sent",
    "fallbacks": "traffic.fallbacks",
    "fallback_error": "traffic.fallback_error",
    "retries": "traffic.retries",
    "extra_bytes_shipped": "traffic.extra_bytes_shipped",
    "wrong_results": "traffic.wrong_results",
    "failed_rollouts": "traffic.failed_rollouts",
    "request_latency_p50_s": "traffic.latency_p50_s",
    "request_latency_p95_s": "traffic.latency_p95_s",
    "request_latency_max_s": "traffic.latency_max_s",
    "asset_disk_bytes": "traffic.asset_disk_bytes",
    # the engine
    "engine_version": "engine.version",
    "engine_flags": "engine.flags",
    "engine_failure": "engine.failure",
    "engine_rss_baseline_bytes": "engine.figures.rss_baseline_bytes",
    "engine_rss_bytes": "engine.figures.rss_bytes",
    "engine_rss_trimmed_bytes": "engine.figures.rss_trimmed_bytes",
    "engine_peak_rss_bytes": "engine.figures.peak_rss_bytes",
    "engine_bytes_received": "engine.figures.bytes_received",
    "engine_errors": "engine.figures.errors",
    "engine_status_counts": "engine.figures.status_counts",
    "engine_cache_bytes": "engine.figures.cache_bytes",
    "engine_cache_items": "engine.figures.cache_items",
    "engine_cache_hits": "engine.figures.cache_hits",
    "engine_cache_misses": "engine.figures.cache_misses",
    "engine_mm_cache_queries": "engine.figures.mm_cache_queries",
    "engine_preprocess_calls": "engine.figures.preprocess_calls",
    "engine_restarts": "engine.figures.restarts",
    "engine_injected_errors": "engine.figures.injected_errors",
    "engine_injected_evictions": "engine.figures.injected_evictions",
    "engine_cpu_s": "engine.figures.cpu_s",
    "engine_processes": "engine.figures.processes",
    # the model
    "source_bytes_per_image": "prediction.source_bytes_per_image",
    "predicted_retained_bytes": "prediction.retained_bytes",
    "predicted_bytes_shipped": "prediction.bytes_shipped",
    "predicted_peak_bytes": "prediction.peak_bytes",
    "predicted_engine_peak_bytes": "prediction.engine_peak_bytes",
    "predicted_system_peak_bytes": "prediction.system_peak_bytes",
    "predicted_renderer_cache_hits": "prediction.renderer_cache_hits",
    "predicted_renderer_cache_misses": "prediction.renderer_cache_misses",
    "predicted_rederived": "prediction.rederived",
    "predicted_engine_cache_hits": "prediction.engine_cache_hits",
    "predicted_engine_cache_misses": "prediction.engine_cache_misses",
    "predicted_fallbacks": "prediction.fallbacks",
    "predicted_engine_preprocess_calls": "prediction.engine_preprocess_calls",
    "retained_ratio": "prediction.retained_ratio",
    "shipped_ratio": "prediction.shipped_ratio",
    # time
    "wall_s": "timing.wall_s",
    "rollout_wall_s": "timing.rollout_wall_s",
    "start_method": "timing.start_method",
    "timeline_file": "timing.timeline_file",
    "overhead_sources_s": "timing.overhead.sources_s",
    "overhead_engine_start_s": "timing.overhead.engine_start_s",
    "overhead_start_s": "timing.overhead.worker_start_s",
    "overhead_setup_s": "timing.overhead.setup_s",
    "overhead_readings_s": "timing.overhead.readings_s",
    "overhead_engine_stop_s": "timing.overhead.engine_stop_s",
    "overhead_other_s": "timing.overhead.other_s",
    # the machine
    "machine_host": "machine.host",
    "machine_cpu_model": "machine.cpu_model",
    "machine_cpu_count": "machine.cpu_count",
    "machine_memory_bytes": "machine.memory_bytes",
    "machine_environment": "machine.environment",
    "cluster_worker": "machine.cluster_worker",
    "cluster_attempts": "machine.cluster_attempts",
}  # fmt: skip
# v5's per-kind VmHWM fields: the same figures as engine_processes[kind]["peak_rss_bytes"].
V5_KIND_PEAKS = {
    "engine_api_peak_rss_bytes": "api_server",
    "engine_core_peak_rss_bytes": "engine_core",
    "engine_worker_peak_rss_bytes": "worker",
}
V5_ENGINE = "engine"  # "embedded", "vllm", or an external engine's URL
EMBEDDED, VLLM = "embedded", "vllm"


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        out = out.setdefault(name, {})
    out[leaf] = value


def _v5_engine(point: dict[str, Any], out: dict[str, Any]) -> None:
    served = point.pop(V5_ENGINE, None)
    if served is not None:
        kind = served if served in (EMBEDDED, VLLM) else "external"
        _put(out, "engine.kind", kind)
        _put(out, "engine.url", served if kind == "external" else None)
    peaks = {kind: point.pop(name, None) for name, kind in V5_KIND_PEAKS.items()}
    processes = point.get("engine_processes")
    if processes is None and any(v is not None for v in peaks.values()):
        # a tree whose readiness stats were missing: its peaks are all v5 kept of it
        point["engine_processes"] = {k: {"peak_rss_bytes": v} for k, v in peaks.items() if v is not None}


def v5_point(point: dict[str, Any]) -> dict[str, Any]:
    """One flat v5 point as a v6 one. A key this table does not know stays at the top, where the
    record's reader names it as unknown."""
    flat = dict(point)
    out: dict[str, Any] = {}
    _v5_engine(flat, out)
    configs = set(field_names())
    for key, value in flat.items():
        if key in configs:
            _put(out, f"config.{key}", value)
        else:
            _put(out, V5_PATHS.get(key, key), value)
    return out


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 added the engine's body limit as a point parameter; v1 points ran with the default."""
    points = [dict(p, engine_max_body_mb=p.get("engine_max_body_mb", 2048)) if isinstance(p, dict) else p
              for p in data.get("points", [])]  # fmt: skip
    return dict(data, schema_version=2, points=points)


# v3 added engine faults and the client knobs as point parameters; v2 points ran with them off.
_V3_DEFAULTS: dict[str, Any] = {
    "engine_evict_rate": 0.0, "engine_restart_every": 0, "engine_error_rate": 0.0, "engine_delay_ms": 0.0,
    "retry_budget": 8, "max_inflight_builds": 0, "trim_after_build": "off", "malloc_arena_max": 0,
    "malloc_mmap_threshold": 0, "dtype": "float32",
}  # fmt: skip


def _v2_point(p: dict[str, Any]) -> dict[str, Any]:
    out = dict(p)
    # v2 recorded the worker's environment under the names that are now the knobs
    out["env_malloc_mmap_threshold"] = out.pop("malloc_mmap_threshold", None)
    out["env_malloc_arena_max"] = out.pop("malloc_arena_max", None)
    return {**_V3_DEFAULTS, **out}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    points = [_v2_point(p) if isinstance(p, dict) else p for p in data.get("points", [])]
    return dict(data, schema_version=3, points=points)


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """v4 added the raw-media modes, the time axis, the model's counts, the machine block, the
    overhead phases (readings a v3 point did not take: None) and the renderer backend as point
    parameters (v3 points were rendered by the simulation, with no tokenizer)."""
    points = [{"renderer": "sim", "tokenizer": "", **p} if isinstance(p, dict) else p
              for p in data.get("points", [])]  # fmt: skip
    return dict(data, schema_version=4, points=points)


def _v4_to_v5(data: dict[str, Any]) -> dict[str, Any]:
    """v5 added the real engine's flags as a point parameter (v4 points had none) and its figures."""
    points = [{"engine_args": "", **p} if isinstance(p, dict) else p for p in data.get("points", [])]
    return dict(data, schema_version=5, points=points)


def _v5_to_v6(data: dict[str, Any]) -> dict[str, Any]:
    """v6 nests each point by what its figures describe; no figure changes."""
    points = [v5_point(p) if isinstance(p, dict) else p for p in data.get("points", [])]
    return dict(data, schema_version=6, points=points)


# schema_version -> the function that lifts such a file one version up.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6,
}  # fmt: skip


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Lift an older results file to this version, one step at a time."""
    while type(data.get("schema_version")) is int and data["schema_version"] in MIGRATIONS:
        data = MIGRATIONS[data["schema_version"]](data)
    return data
