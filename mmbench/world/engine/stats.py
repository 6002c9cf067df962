"""What an engine reports of itself: one type for mmbench's engine (its GET /stats and the final
stats an incarnation writes as it exits) and for a real vLLM (its process tree, /metrics and the
counts mmbench's middleware keeps), read by the harness into the record's engine figures.

Counters count from the engine's start; `SUMMED` names those that add up across incarnations (an
engine that restarts) and that a point counts from its own start (the harness subtracts the ready
stats). Everything else is the engine's state now.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import msgspec


@dataclass(frozen=True, slots=True)
class KindUsage:
    """One kind of process of a real engine, summed over its processes."""

    rss_bytes: int
    cpu_s: float


@dataclass(frozen=True, slots=True)
class EngineStats:
    rss_bytes: int  # now (after the trim, where one was asked for)
    cpu_s: float = 0.0
    pid: int | None = None
    requests: int = 0
    ok: int = 0
    errors: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)  # answers by HTTP status
    bytes_received: int = 0
    items_full: int = 0
    items_null: int = 0
    cache_capacity_bytes: int | None = None
    cache_bytes: int | None = None
    cache_items: int | None = None
    cache_hits: int | None = 0
    cache_misses: int | None = 0
    cache_evictions: int = 0
    cache_queries: int | None = None  # vLLM's mm_cache_queries
    injected_errors: int = 0
    injected_evictions: int = 0
    max_in_flight: int = 0
    preprocess_calls: int | None = 0
    media_bytes: int = 0
    finished: int | None = None  # vLLM's requests finished
    restarts: int | None = None  # incarnations after the first (None: not an engine mmbench restarts)
    rss_untrimmed_bytes: int | None = None  # with a trim: the RSS before it, in the same answer
    peaks: dict[str, int] | None = None  # a real vLLM's VmHWM per process kind
    kinds: dict[str, KindUsage] | None = None  # a real vLLM's RSS and CPU per process kind
    cache_sizes: dict[str, int] | None = None  # GET /stats?keys=1: each cached item's bytes by hash

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> EngineStats | None:
        """An engine's answer as stats; None where it is not mmbench's (another server's JSON)."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError:  # ValidationError included
            return None

    def plus(self, other: EngineStats) -> EngineStats:
        """These stats with an exited incarnation's counters and answers added (its state is not
        kept)."""
        return self._combine(other, 1)

    def since(self, ready: EngineStats) -> EngineStats:
        """These stats with the counters and answers counted from `ready` (a point's own, from its
        start: an engine that served earlier points, an external one or a sweep's reused vLLM,
        counted them too)."""
        return self._combine(ready, -1)

    def _combine(self, other: EngineStats, sign: int) -> EngineStats:
        changes: dict[str, object] = {}
        for name in SUMMED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, int | float) and isinstance(theirs, int | float):
                changes[name] = mine + sign * theirs
        counts = dict(self.status_counts)
        for status, n in other.status_counts.items():
            counts[status] = counts.get(status, 0) + sign * n
        changes["status_counts"] = {k: v for k, v in counts.items() if v}
        return replace(self, **changes)  # type: ignore[arg-type]


# Counters that add up across incarnations and that a point counts from its start (status_counts
# too, by status).
SUMMED = (
    "requests", "ok", "errors", "bytes_received", "items_full", "items_null", "cache_hits",
    "cache_misses", "cache_evictions", "cache_queries", "injected_errors", "injected_evictions",
    "preprocess_calls", "media_bytes", "cpu_s",
)  # fmt: skip
assert set(SUMMED) <= {f.name for f in fields(EngineStats)}
