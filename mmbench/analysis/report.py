"""The report: the pull request's table (retained memory per K and mode, and each mode's reduction
against full) and a per-mode summary, built once from a results file for every reporter."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from operator import attrgetter
from typing import Any

from mmbench.analysis.fidelity import FidelityRow, fidelity_rows
from mmbench.analysis.fits import Fit, ModeFit, Stat, mode_fits
from mmbench.analysis.ledger import CacheTradeoff, Ledger, cache_tradeoffs, ledger, median_ledger
from mmbench.analysis.models import ModelRow, model_rows
from mmbench.config import field_names
from mmbench.errors import MmbenchError
from mmbench.measure.machines import machines, machines_differ, split_key
from mmbench.results import PointRecord, ResultsFile
from mmbench.transports.registry import MODES

METRICS = {"live": "client.retained_live_bytes", "raw": "client.retained_bytes"}  # metric -> dotted path
REFERENCE_MODE = "full"
# Extrapolated records carry their figures in the same fields as measured ones, so both have values.
VALUED = ("ok", "extrapolated")
# The axes of the table itself; every other parameter that varies splits the report into sections.
AXES = ("mode", "rollouts")


@dataclass(frozen=True, slots=True)
class Cell:
    """One (K, mode) point of the table: the metric over its repeats, or why there is none."""

    mode: str
    rollouts: int
    status: str  # ok, extrapolated, failed, skipped
    value: Stat | None
    reduction: float | None  # full's median / this median at the same K; None for full itself
    repeats: int  # records of the point; value.n is smaller when some repeats failed or were skipped
    cause: str | None

    @property
    def extrapolated(self) -> bool:
        return self.status == "extrapolated"

    @property
    def incomplete(self) -> bool:
        return self.value is not None and self.value.n < self.repeats


@dataclass(frozen=True, slots=True)
class Row:
    rollouts: int
    cells: tuple[Cell | None, ...]  # one per mode of the section; None where the grid has no point

    @property
    def extrapolated(self) -> bool:
        return any(c is not None and c.extrapolated for c in self.cells)


@dataclass(frozen=True, slots=True)
class ModeSummary:
    """One mode over the measured points of a section (extrapolated ones are not evidence)."""

    mode: str
    fit: Fit | None  # the metric's median over K, least squares from the cache-full K on
    fit_k_from: int | None
    largest_k: int | None
    retained: Stat | None  # at the largest measured K
    peak: Stat | None  # peak_bytes (VmHWM minus baseline) at the largest measured K
    heap_peak: Stat | None  # memray's heap high-water mark there, when the sweep ran with --memray
    shipped_per_rollout: Stat | None  # bytes_shipped / rollouts over every measured point
    retained_ratio: Stat | None  # measured / predicted over every measured point
    shipped_ratio: Stat | None
    # --- the whole system at the largest measured K (None without engine baseline readings)
    engine_above_baseline: Stat | None = None  # engine RSS at the end minus its RSS once ready
    system_total: Stat | None = None  # client retained (the report's metric) + engine above baseline
    ledger: Ledger | None = None  # each part's median over the repeats
    # --- both sides of the trade at the largest measured K: memory either way, and time
    retained_live: Stat | None = None
    retained_raw: Stat | None = None
    engine_cache: Stat | None = None
    client_cpu_per_rollout: Stat | None = None  # client CPU seconds during the rollouts / K
    engine_cpu_per_rollout: Stat | None = None  # engine CPU seconds while the worker ran / K
    latency_p95: Stat | None = None  # seconds per request, as the client sees it
    client_preprocess_per_rollout: Stat | None = None  # renderer cache misses / K
    engine_preprocess_per_rollout: Stat | None = None  # engine preprocessing calls / K

    @property
    def heap_gap(self) -> float | None:
        """Peak RSS minus the heap high-water mark: memory the heap profiler does not see."""
        if self.peak is None or self.heap_peak is None:
            return None
        return self.peak.median - self.heap_peak.median


@dataclass(frozen=True, slots=True)
class Section:
    """One combination of the parameters that vary across the results, besides mode and K."""

    params: tuple[tuple[str, Any], ...]
    modes: tuple[str, ...]
    rows: tuple[Row, ...]
    summaries: tuple[ModeSummary, ...]

    @property
    def title(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params)


@dataclass(frozen=True, slots=True)
class Machine:
    cpu_model: str | None
    cpu_count: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True, slots=True)
class Report:
    scenario: str
    description: str
    metric: str  # live or raw
    metric_field: str  # the metric's dotted path in a record
    machine: Machine
    fixed: tuple[tuple[str, Any], ...]  # parameters with one value across the results
    sections: tuple[Section, ...]
    max_repeats: int
    peak_methods: tuple[str, ...]
    mmbench_version: str | None
    git_commit: str | None
    timestamp_utc: str | None
    # the hash-only modes against engine_cache_gb, where the results vary it
    cache_tradeoffs: tuple[CacheTradeoff, ...] = ()
    # the kinds of machine that measured the points, where they differ (a section per machine then)
    machines: tuple[str, ...] = ()
    # sim against the renderers library on the same points, where the results hold both
    fidelity: tuple[FidelityRow, ...] = ()
    # each mode's slope per model against its floor, where the results span several models
    models: tuple[ModelRow, ...] = ()

    @property
    def has_heap_peak(self) -> bool:
        return any(s.heap_peak is not None for sec in self.sections for s in sec.summaries)

    @property
    def has_system_total(self) -> bool:
        return any(s.system_total is not None for sec in self.sections for s in sec.summaries)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Pairs are kept in tuples for order and immutability; JSON readers want objects.
        data["fixed"] = dict(self.fixed)
        for sec, out in zip(self.sections, data["sections"], strict=True):
            out["params"] = dict(sec.params)
            out["title"] = sec.title
            for summary, s_out in zip(sec.summaries, out["summaries"], strict=True):
                s_out["ledger"] = summary.ledger.to_dict() if summary.ledger else None
        for trade, t_out in zip(self.cache_tradeoffs, data["cache_tradeoffs"], strict=True):
            t_out["params"] = dict(trade.params)
        data["fidelity"] = [row.to_dict() for row in self.fidelity]
        data["models"] = [row.to_dict() for row in self.models]
        return data


def stat_of(values: Iterable[float | int | None]) -> Stat | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.median(vals), min(vals), max(vals), len(vals))


def _field_stat(records: Iterable[PointRecord], path: str) -> Stat | None:
    return stat_of(attrgetter(path)(r) for r in records)


def _cell(mode: str, k: int, records: list[PointRecord], metric_field: str) -> Cell:
    ok = [r for r in records if r.status == "ok"]
    extrapolated = [r for r in records if r.status == "extrapolated"]
    # Measured repeats win over extrapolated ones; failed and skipped repeats carry no figures.
    used = ok or extrapolated
    if used:
        status = "ok" if ok else "extrapolated"
    else:
        statuses = {r.status for r in records}
        status = statuses.pop() if len(statuses) == 1 else "failed"  # failed and skipped: the worse
    cause = next((r.cause for r in records if r.cause and r.status != "ok"), None)
    return Cell(mode, k, status, _field_stat(used, metric_field), None, len(records), cause)


def _with_reductions(cells: list[Cell | None], modes: tuple[str, ...]) -> tuple[Cell | None, ...]:
    ref = cells[modes.index(REFERENCE_MODE)] if REFERENCE_MODE in modes else None
    ref_median = ref.value.median if ref is not None and ref.value is not None else None
    out: list[Cell | None] = []
    for cell in cells:
        if cell is None or cell.mode == REFERENCE_MODE or ref_median is None or cell.value is None:
            out.append(cell)
        elif cell.value.median > 0:  # a zero or negative median (noise at tiny K) has no factor
            out.append(replace(cell, reduction=ref_median / cell.value.median))
        else:
            out.append(cell)
    return tuple(out)


def _summary(
    mode: str, measured: list[PointRecord], fit_by_mode: dict[str, ModeFit], metric_field: str
) -> ModeSummary:
    mine = [r for r in measured if r.config.mode == mode]
    mf = fit_by_mode.get(mode)
    largest = max((r.config.rollouts for r in mine), default=None)
    top = [r for r in mine if r.config.rollouts == largest]
    return ModeSummary(
        mode=mode,
        fit=mf.fit if mf else None,
        fit_k_from=mf.k_from if mf else None,
        largest_k=largest,
        retained=_field_stat(top, metric_field),
        peak=_field_stat(top, "client.peak_bytes"),
        heap_peak=_field_stat(top, "client.memray_peak_bytes"),
        shipped_per_rollout=stat_of(
            r.traffic.bytes_shipped / r.config.rollouts for r in mine if r.traffic.bytes_shipped is not None
        ),
        retained_ratio=_field_stat(mine, "prediction.retained_ratio"),
        shipped_ratio=_field_stat(mine, "prediction.shipped_ratio"),
        engine_above_baseline=stat_of(ledger(r).engine_above_baseline for r in top),
        system_total=stat_of(ledger(r).total_with(attrgetter(metric_field)(r)) for r in top),
        ledger=median_ledger(top),
        retained_live=_field_stat(top, "client.retained_live_bytes"),
        retained_raw=_field_stat(top, "client.retained_bytes"),
        engine_cache=_field_stat(top, "engine.figures.cache_bytes"),
        client_cpu_per_rollout=_per_rollout(top, "client.cpu_s"),
        engine_cpu_per_rollout=_per_rollout(top, "engine.figures.cpu_s"),
        latency_p95=_field_stat(top, "traffic.latency_p95_s"),
        client_preprocess_per_rollout=_per_rollout(top, "client.rendering.cache_misses"),
        engine_preprocess_per_rollout=_per_rollout(top, "engine.figures.preprocess_calls"),
    )


def _per_rollout(records: Iterable[PointRecord], path: str) -> Stat | None:
    values = ((attrgetter(path)(r), r.config.rollouts) for r in records)
    return stat_of(None if v is None else v / k for v, k in values)


def _section(params: tuple[tuple[str, Any], ...], records: list[PointRecord], metric_field: str) -> Section:
    present = {r.config.mode for r in records}
    # Registry order puts full, the reference, first, as in the pull request.
    modes = tuple(m for m in MODES if m in present) + tuple(sorted(present - set(MODES)))
    points: dict[tuple[int, str], list[PointRecord]] = {}
    for r in records:
        points.setdefault((r.config.rollouts, r.config.mode), []).append(r)
    rows = []
    for k in sorted({r.config.rollouts for r in records}):
        cells = [_cell(m, k, points[(k, m)], metric_field) if (k, m) in points else None for m in modes]
        rows.append(Row(k, _with_reductions(cells, modes)))
    measured = [r for r in records if r.status == "ok"]
    # A section fixes every parameter but mode and K, so mode_fits yields one fit per mode here.
    fit_by_mode = {f.mode: f for f in mode_fits(measured, metric_field)}
    summaries = tuple(_summary(m, measured, fit_by_mode, metric_field) for m in modes)
    return Section(params, modes, tuple(rows), summaries)


def build_report(results: ResultsFile, metric: str = "live") -> Report:
    """The pull request's table and the per-mode summary, one section per combination of the
    parameters (other than mode and K) that vary across the results."""
    if metric not in METRICS:
        raise MmbenchError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    metric_field = METRICS[metric]
    records = results.points
    if not any(r.status in VALUED for r in records):
        counts = ", ".join(f"{sum(r.status == s for r in records)} {s}" for s in ("failed", "skipped"))
        raise MmbenchError(f"no ok or extrapolated points to report ({len(records)} points: {counts})")
    others = [k for k in field_names() if k not in AXES]
    varying = [k for k in others if len({getattr(r.config, k) for r in records}) > 1]
    fixed = tuple((k, getattr(records[0].config, k)) for k in others if k not in varying)
    # Points measured on different kinds of machine get sections of their own (never one fit).
    split = machines_differ(records)
    names = (*varying, "machine") if split else tuple(varying)
    combos: dict[tuple[Any, ...], list[PointRecord]] = {}
    for r in records:
        key = tuple(getattr(r.config, k) for k in varying) + (
            (split_key(r, split) or "none",) if split else ()
        )
        combos.setdefault(key, []).append(r)
    sections = tuple(
        _section(tuple(zip(names, key, strict=True)), recs, metric_field) for key, recs in combos.items()
    )
    env = results.environment
    return Report(
        scenario=str(results.scenario.get("name", "results")),
        description=str(results.scenario.get("description", "")),
        metric=metric,
        metric_field=metric_field,
        machine=Machine(env.get("cpu_model"), env.get("cpu_count"), env.get("memory_total_bytes")),
        fixed=fixed,
        sections=sections,
        max_repeats=max(r.repeat for r in records) + 1,
        peak_methods=tuple(sorted({r.client.rss.peak_method for r in records if r.client.rss.peak_method})),
        mmbench_version=env.get("mmbench"),
        git_commit=env.get("git_commit"),
        timestamp_utc=env.get("timestamp_utc"),
        cache_tradeoffs=tuple(cache_tradeoffs(records)),
        machines=tuple(machines(records)) if split else (),
        fidelity=tuple(fidelity_rows(records)),
        models=tuple(model_rows(records, metric_field)),
    )
