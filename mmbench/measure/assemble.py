"""A point's record, put together by the harness from what each side measured.

The worker sends its `client` and `traffic` sections whole (mmbench.measure.worker_io); this
module turns the engine's stats into its figures and the model's prediction into the prediction
section, with the ratios of measured over predicted. No figure is renamed on the way: each is
read off the type it is defined in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from mmbench.config import PointConfig
from mmbench.measure.model import Prediction
from mmbench.measure.worker_io import WorkerResult
from mmbench.record import (
    ClientFigures,
    EngineFigures,
    EngineRecord,
    PointRecord,
    PredictionFigures,
    ProcessFigures,
    Timing,
    Traffic,
    TrainerFigures,
)

if TYPE_CHECKING:
    from mmbench.trainer.stage import StageOutcome
from mmbench.units import RSS_NOISE_FLOOR_BYTES
from mmbench.world.engine.stats import EngineStats


def predicted(
    pred: Prediction, per_image: float, client: ClientFigures, traffic: Traffic
) -> PredictionFigures:
    live, shipped = client.retained_live_bytes, traffic.bytes_shipped
    return PredictionFigures(
        source_bytes_per_image=per_image,
        retained_bytes=pred.retained_bytes,
        bytes_shipped=pred.bytes_shipped,
        peak_bytes=pred.peak_bytes,
        engine_peak_bytes=pred.engine_peak_bytes,
        system_peak_bytes=pred.system_peak_bytes,
        renderer_cache_hits=pred.renderer_cache_hits,
        renderer_cache_misses=pred.renderer_cache_misses,
        rederived=pred.rederived,
        engine_cache_hits=pred.engine_cache_hits,
        engine_cache_misses=pred.engine_cache_misses,
        fallbacks=pred.fallbacks,
        engine_preprocess_calls=pred.engine_preprocess_calls,
        fleet_misses=pred.fleet_misses,
        router_retries=pred.router_retries,
        failed_rollouts=pred.failed_rollouts,
        # below the noise floor of RSS readings a ratio says nothing (None, shown as "-")
        retained_ratio=live / pred.retained_bytes
        if live is not None and pred.retained_bytes >= RSS_NOISE_FLOOR_BYTES
        else None,
        shipped_ratio=shipped / pred.bytes_shipped if shipped is not None and pred.bytes_shipped else None,
    )


def _status_text(counts: dict[str, int] | None) -> str | None:
    """{"200": 52, "500": 4} -> "200:52,500:4" (None: the engine does not count them)."""
    if not counts:
        return None
    return ",".join(f"{status}:{n}" for status, n in sorted(counts.items()))


def _process_kinds(
    ready: EngineStats, final: EngineStats, base: EngineStats
) -> dict[str, ProcessFigures] | None:
    """A real vLLM's tree per process kind: RSS at its baseline (`base`), at the point's start
    (`ready`) and at the end, VmHWM during the point, CPU seconds in between (None: an engine that
    does not report its processes)."""
    if not ready.kinds or not final.kinds:
        return None
    out = {}
    for kind, now in sorted(final.kinds.items()):
        before, baseline = ready.kinds.get(kind), (base.kinds or {}).get(kind)
        out[kind] = ProcessFigures(
            baseline_rss_bytes=baseline.rss_bytes if baseline else None, rss_bytes=now.rss_bytes,
            peak_rss_bytes=(final.peaks or {}).get(kind), cpu_s=now.cpu_s - (before.cpu_s if before else 0.0),
            start_rss_bytes=before.rss_bytes if before else None,
        )  # fmt: skip
    return out


def engine_figures(
    final: EngineStats | None, ready: EngineStats | None, peak: int | None, base: EngineStats | None = None
) -> EngineFigures:
    """The engine's figures: its stats at the end of the point (`final`, counters already counted
    from `ready`, its stats at the point's start; trimmed, with the RSS before the trim), its
    baseline (`base`: a reused engine's once warm, before its first point; else `ready`) and its
    peak during the point."""
    base = base if base is not None else ready
    baseline = base.rss_bytes if base is not None else None
    start = ready.rss_bytes if ready is not None else None
    if final is None or ready is None or base is None:
        return EngineFigures(rss_baseline_bytes=baseline, rss_start_bytes=start, peak_rss_bytes=peak)
    untrimmed = final.rss_untrimmed_bytes
    return EngineFigures(
        rss_baseline_bytes=baseline,
        rss_start_bytes=start,
        rss_bytes=untrimmed if untrimmed is not None else final.rss_bytes,
        rss_trimmed_bytes=final.rss_bytes,
        peak_rss_bytes=peak,
        bytes_received=final.bytes_received,
        errors=final.errors,
        status_counts=_status_text(final.status_counts),
        cache_bytes=final.cache_bytes,
        cache_items=final.cache_items,
        cache_hits=final.cache_hits,
        cache_misses=final.cache_misses,
        mm_cache_queries=final.cache_queries,
        preprocess_calls=final.preprocess_calls,
        restarts=final.restarts,
        injected_errors=final.injected_errors,
        injected_evictions=final.injected_evictions,
        cpu_s=final.cpu_s,
        processes=_process_kinds(ready, final, base),
    )


def point_record(
    config: PointConfig, repeat: int, per_image: float, pred: Prediction, *, status: str = "ok",
    cause: str | None = None, worker: WorkerResult | None = None, engine: EngineRecord | None = None,
    timing: Timing | None = None, asset_disk_bytes: int | None = None, stage: StageOutcome | None = None,
) -> PointRecord:  # fmt: skip
    """The record of a point, whatever became of it: a worker's result makes it measured (failed
    where a rollout failed, or where the trainer stage failed or saw pixels other than the
    engine's), none leaves only the prediction and what the engine showed."""
    client = worker.client if worker is not None else ClientFigures()
    traffic = worker.traffic if worker is not None else Traffic()
    if asset_disk_bytes is not None:
        traffic = replace(traffic, asset_disk_bytes=asset_disk_bytes)
    if worker is not None and traffic.failed_rollouts:
        status, cause = "failed", f"{traffic.failed_rollouts} rollout(s) failed: {worker.failures[0]}"
    elif stage is not None and stage.failure is not None:
        status, cause = "failed", stage.failure
    return PointRecord(
        config=config, repeat=repeat, status=status, cause=cause, client=client, traffic=traffic,
        engine=engine or EngineRecord(), trainer=stage.figures if stage is not None else TrainerFigures(),
        prediction=predicted(pred, per_image, client, traffic), timing=timing or Timing(),
    )  # fmt: skip
