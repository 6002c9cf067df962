"""The memory ledger of the whole system: per point, where the memory lives.

Derived from a record's fields only (no measurement here), so that every reporter says the same:

- client data held (the program's own accounting): the trajectories' pixel_values, descriptors,
  encoded sources and token streams, and pixels only the renderer caches hold;
- client measured: retained (live, after trim), the allocator's retention (raw minus live) and the
  transient (peak minus raw retained);
- engine: its cache, and its RSS above the baseline it had once ready (before the worker started);
- the system total: client retained (raw) + engine RSS above its baseline.

The check compares the data held with what RSS says, in each process: the client's data with its
live retained RSS, the engine's cache with its RSS above baseline after the engine, too, has run
gc.collect() and malloc_trim(0) (GET /stats?trim=1); without that reading, the untrimmed one.

Also here: the engine-cache trade-off of the hash-only modes (bytes shipped, fallbacks and engine
cache bytes against engine_cache_gb, beside the ideal and what full would ship).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from mmbench.analysis.fits import Stat
from mmbench.config import PointConfig, field_names
from mmbench.measure.model import predict
from mmbench.results import PointRecord
from mmbench.transports.registry import MODES, TRANSPORTS

TOLERANCE = 0.05  # the data held and the RSS it occupies agree within this share


def _sum(*values: int | None) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _diff(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a - b


@dataclass(frozen=True, slots=True)
class Check:
    """Data held (accounted) against the RSS it should occupy, in one process."""

    process: str  # client or engine
    data: int
    measured: int

    @property
    def ratio(self) -> float | None:
        return self.data / self.measured if self.measured > 0 else None

    @property
    def ok(self) -> bool:
        return self.measured > 0 and abs(self.data - self.measured) <= TOLERANCE * self.measured

    def text(self) -> str:
        if self.ratio is None:
            return f"{self.process}: nothing measured"
        verdict = "within" if self.ok else "outside"
        return f"{self.process}: data / RSS = {self.ratio:.3f} ({verdict} {TOLERANCE:.0%})"


@dataclass(frozen=True, slots=True)
class Ledger:
    """One point's memory by part, in bytes (None where the record has no such reading)."""

    # --- client: the data held (accounting)
    pixels: int | None  # distinct pixel_values buffers reachable from the trajectories
    descriptors: int | None  # sidecar metadata of every step
    sources: int | None  # encoded source images held by the conversations
    tokens: int | None  # token streams, completions, logprobs, step objects
    renderer_caches: int | None  # pixels only the renderer caches hold
    # --- client: measured (RSS above its baseline)
    client_live: int | None  # retained after trim: what the live data occupies
    client_retained: int | None  # retained as is (raw)
    client_peak: int | None
    # --- engine
    engine_cache: int | None
    engine_rss: int | None  # at the end of the point
    engine_rss_trimmed: int | None  # the same after gc + malloc_trim in the engine
    engine_baseline: int | None  # once ready, before the worker started
    engine_peak: int | None

    @property
    def trajectories(self) -> int | None:
        return _sum(self.pixels, self.descriptors, self.sources, self.tokens)

    @property
    def client_data(self) -> int | None:
        """The data parts: trajectories and renderer caches (the record's live_data_bytes)."""
        return _sum(self.trajectories, self.renderer_caches)

    @property
    def client_unaccounted(self) -> int | None:
        """Live retained RSS that no data part explains."""
        return _diff(self.client_live, self.client_data)

    @property
    def allocator_retention(self) -> int | None:
        """Freed memory the client's allocator keeps: raw minus live."""
        return _diff(self.client_retained, self.client_live)

    @property
    def client_transient(self) -> int | None:
        """Above what the client retains at its peak: peak minus raw retained."""
        return _diff(self.client_peak, self.client_retained)

    @property
    def engine_above_baseline(self) -> int | None:
        return _diff(self.engine_rss, self.engine_baseline)

    @property
    def engine_other(self) -> int | None:
        """Engine RSS above baseline that its cache does not explain (its allocator's retention,
        buffers of requests, the HTTP server)."""
        return _diff(self.engine_above_baseline, self.engine_cache)

    @property
    def engine_peak_above_baseline(self) -> int | None:
        return _diff(self.engine_peak, self.engine_baseline)

    @property
    def total(self) -> int | None:
        """The system's retained memory: client retained (raw) + engine RSS above its baseline."""
        return _sum(self.client_retained, self.engine_above_baseline)

    @property
    def total_live(self) -> int | None:
        """The same with the client's live retained (its allocator's retention left out)."""
        return _sum(self.client_live, self.engine_above_baseline)

    def total_with(self, client: int | None) -> int | None:
        """The system total with another client figure (the report's metric, live or raw)."""
        return _sum(client, self.engine_above_baseline)

    @property
    def client_check(self) -> Check | None:
        if self.client_data is None or self.client_live is None:
            return None
        return Check("client", self.client_data, self.client_live)

    @property
    def engine_check(self) -> Check | None:
        # Compared with the trimmed reading, as the client's data is with its live (trimmed) RSS.
        live = _diff(self.engine_rss_trimmed, self.engine_baseline)
        above = live if live is not None else self.engine_above_baseline
        if self.engine_cache is None or above is None:
            return None
        return Check("engine", self.engine_cache, above)

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(c for c in (self.client_check, self.engine_check) if c is not None)

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def to_dict(self) -> dict[str, Any]:
        """The readings, the derived parts and the checks (for JSON readers)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in DERIVED:
            out[name] = getattr(self, name)
        out["checks"] = {c.process: {"data": c.data, "measured": c.measured, "ratio": c.ratio, "ok": c.ok}
                         for c in self.checks}  # fmt: skip
        return out


DERIVED = (
    "trajectories", "client_data", "client_unaccounted", "allocator_retention", "client_transient",
    "engine_above_baseline", "engine_other", "engine_peak_above_baseline", "total", "total_live",
)  # fmt: skip


def ledger(record: PointRecord) -> Ledger:
    c, held, e = record.client, record.client.accounting, record.engine.figures
    return Ledger(
        pixels=held.stored_pixel_bytes,
        descriptors=held.descriptor_bytes,
        sources=held.source_bytes,
        tokens=held.other_bytes,
        renderer_caches=held.renderer_cache_only_bytes,
        client_live=c.retained_live_bytes,
        client_retained=c.retained_bytes,
        client_peak=c.peak_bytes,
        engine_cache=e.cache_bytes,
        engine_rss=e.rss_bytes,
        engine_rss_trimmed=e.rss_trimmed_bytes,
        engine_baseline=e.rss_baseline_bytes,
        engine_peak=e.peak_rss_bytes,
    )


def median_ledger(records: Iterable[PointRecord]) -> Ledger | None:
    """Each part's median over the records (repeats of one point); None without records."""
    ledgers = [ledger(r) for r in records]
    if not ledgers:
        return None
    parts: dict[str, Any] = {}
    for f in fields(Ledger):
        values = [v for lg in ledgers if (v := getattr(lg, f.name)) is not None]
        parts[f.name] = int(statistics.median(values)) if values else None
    return Ledger(**parts)


@dataclass(frozen=True, slots=True)
class LedgerLine:
    label: str
    value: int | None
    kind: str  # part (a component), sum (of the parts above), reading (measured), total
    process: str  # client, engine, system
    check: Check | None = None  # on the reading a check compares the data held with


def lines(lg: Ledger) -> list[LedgerLine]:
    """The ledger as labelled lines, in reading order: every reporter draws these."""
    c, e = "client", "engine"
    out = [
        LedgerLine("trajectories: pixel_values", lg.pixels, "part", c),
        LedgerLine("trajectories: descriptors", lg.descriptors, "part", c),
        LedgerLine("trajectories: sources (encoded, or media URLs)", lg.sources, "part", c),
        LedgerLine("trajectories: tokens and steps", lg.tokens, "part", c),
        LedgerLine("renderer caches (only holder)", lg.renderer_caches, "part", c),
        LedgerLine("client data held (sum)", lg.client_data, "sum", c),
        LedgerLine("client retained, live (RSS)", lg.client_live, "reading", c, lg.client_check),
        LedgerLine("client unaccounted (live − data)", lg.client_unaccounted, "part", c),
        LedgerLine("client allocator retention (raw − live)", lg.allocator_retention, "part", c),
        LedgerLine("client retained, raw (RSS)", lg.client_retained, "reading", c),
        LedgerLine("client transient (peak − raw)", lg.client_transient, "part", c),
        LedgerLine("client peak (RSS)", lg.client_peak, "reading", c),
        LedgerLine("engine cache", lg.engine_cache, "part", e),
        LedgerLine("engine other (RSS − baseline − cache)", lg.engine_other, "part", e),
        LedgerLine("engine RSS above its baseline", lg.engine_above_baseline, "reading", e, lg.engine_check),
        LedgerLine("engine peak RSS above its baseline", lg.engine_peak_above_baseline, "reading", e),
        LedgerLine("engine RSS (baseline when ready)", lg.engine_baseline, "reading", e),
        LedgerLine("system total (client raw + engine above baseline)", lg.total, "total", "system"),
        LedgerLine("system total (client live + engine above baseline)", lg.total_live, "total", "system"),
    ]
    return out


LEDGER_NOTE = (
    "Client figures are RSS above the worker's baseline after setup; the data parts are the program's "
    "own accounting (distinct buffers counted once). Engine figures are RSS above the engine's RSS once "
    "ready, before the worker started; the engine is not trimmed, so its allocator's retention is in "
    "'engine other'. Check: data held / RSS it occupies, client against live retained, engine cache "
    f"against engine RSS above baseline; within {TOLERANCE:.0%} passes."
)


# --- the engine-cache trade-off of the hash-only modes ------------------------------------------

FAULTS = ("engine_evict_rate", "engine_restart_every", "engine_error_rate")
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(PointConfig)}


def ideal_config(config: PointConfig) -> PointConfig:
    """Hash-only with no faults and an engine cache that holds everything: each distinct image
    shipped once (the model predicts the fallbacks of a smaller cache)."""
    no_faults: dict[str, Any] = {k: _DEFAULTS[k] for k in FAULTS if k in _DEFAULTS}
    return replace(config, mode="hash-only", engine_cache_gb=UNBOUNDED_GB, **no_faults)


def ideal_bytes_shipped(record: PointRecord) -> int | None:
    per_image = record.prediction.source_bytes_per_image
    if per_image is None:
        return None
    return predict(ideal_config(record.config), per_image).bytes_shipped


def full_bytes_shipped(record: PointRecord) -> int | None:
    """What full would ship at the same point (every image so far, every turn)."""
    per_image = record.prediction.source_bytes_per_image
    if per_image is None:
        return None
    return predict(replace(record.config, mode="full"), per_image).bytes_shipped


def working_set_bytes(record: PointRecord) -> int | None:
    """The engine cache that holds every distinct image of the point (the model, unbounded cache)."""
    per_image = record.prediction.source_bytes_per_image
    if per_image is None:
        return None
    unbounded = replace(record.config, engine_cache_gb=UNBOUNDED_GB)
    return predict(unbounded, per_image).engine_cache_bytes


UNBOUNDED_GB = 100_000.0


def _stat(values: Iterable[float | int | None]) -> Stat | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.median(vals), min(vals), max(vals), len(vals))


@dataclass(frozen=True, slots=True)
class TradeoffPoint:
    """One hash-only mode at one engine_cache_gb, over the ok repeats."""

    mode: str
    engine_cache_gb: float
    bytes_shipped: Stat
    fallbacks: Stat | None
    engine_cache_bytes: Stat | None


@dataclass(frozen=True, slots=True)
class CacheTradeoff:
    """The hash-only modes against engine_cache_gb, every other parameter fixed (`params`: those
    of them that vary across the results)."""

    params: tuple[tuple[str, Any], ...]
    modes: tuple[str, ...]
    cache_gb: tuple[float, ...]
    points: tuple[TradeoffPoint, ...]
    ideal_bytes_shipped: float | None  # each distinct image shipped once (hash-only, no faults)
    full_bytes_shipped: float | None  # what full would ship at the same point
    working_set_bytes: float | None = None  # every distinct image in the engine cache (the model)

    @property
    def title(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params)

    def at(self, mode: str, gb: float) -> TradeoffPoint | None:
        return next((p for p in self.points if p.mode == mode and p.engine_cache_gb == gb), None)


def cache_tradeoffs(records: Sequence[PointRecord]) -> list[CacheTradeoff]:
    """One trade-off per setting of every parameter but mode and engine_cache_gb, over the measured
    points of the modes that use the engine cache; only where engine_cache_gb takes two values."""
    used = [r for r in records if r.ok and r.traffic.bytes_shipped is not None]
    used = [r for r in used if r.config.mode in TRANSPORTS and TRANSPORTS[r.config.mode].needs_engine_cache]
    others = [k for k in field_names() if k not in ("mode", "engine_cache_gb")]
    families: dict[tuple[Any, ...], list[PointRecord]] = {}
    for r in used:
        families.setdefault(tuple(getattr(r.config, k) for k in others), []).append(r)
    varying = [i for i, _ in enumerate(others) if len({key[i] for key in families}) > 1]
    out: list[CacheTradeoff] = []
    order = {m: i for i, m in enumerate(MODES)}
    for key, recs in families.items():
        gbs = tuple(sorted({r.config.engine_cache_gb for r in recs}))
        if len(gbs) < 2:
            continue
        modes = tuple(sorted({r.config.mode for r in recs}, key=lambda m: order.get(m, len(order))))
        points = []
        for mode in modes:
            for gb in gbs:
                at = [r for r in recs if r.config.mode == mode and r.config.engine_cache_gb == gb]
                shipped = _stat(r.traffic.bytes_shipped for r in at)
                if shipped is None:
                    continue
                fb = _stat(r.traffic.fallbacks for r in at)
                cache = _stat(r.engine.figures.cache_bytes for r in at)
                points.append(TradeoffPoint(mode, gb, shipped, fb, cache))
        ideal = _stat(ideal_bytes_shipped(r) for r in recs)
        full = _stat(full_bytes_shipped(r) for r in recs)
        working = _stat(working_set_bytes(r) for r in recs)
        out.append(
            CacheTradeoff(
                params=tuple((others[i], key[i]) for i in varying),
                modes=modes,
                cache_gb=gbs,
                points=tuple(points),
                ideal_bytes_shipped=ideal.median if ideal else None,
                full_bytes_shipped=full.median if full else None,
                working_set_bytes=working.median if working else None,
            )
        )
    return out
