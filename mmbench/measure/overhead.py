"""Where a point's wall time goes besides its rollouts: the instrument's own cost, phase by phase.

The harness stamps its side (time.monotonic()) and the worker stamps its own phases on the same
clock (CLOCK_MONOTONIC is system-wide on Linux), so that the phases of the two processes line up:

- overhead_sources_s: making the point's source images (the environment's work), where an earlier
  point of the sweep has not made them;
- overhead_engine_start_s: from then until the engine answered and its baseline was read;
- overhead_start_s: from the worker's request until its main() runs (process start and imports, or
  the fork);
- overhead_setup_s: from main() until the world is built and warmed up and the collector frozen;
- overhead_readings_s: the baseline readings before the rollouts, and every reading, trim and the
  ledger after them;
- overhead_engine_stop_s: from the worker's exit until the engine's final stats are read and it is
  stopped;
- overhead_other_s: what is left of wall_s: writing the result, the worker's exit, bookkeeping.

A fork server that has to start for the point (a sweep's first point) is counted in the phase
that waited for it: the worker's server starts as the point begins, beside the sources and the
engine, and what is left of its start shows in overhead_start_s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OVERHEAD_FIELDS = (
    "overhead_sources_s", "overhead_engine_start_s", "overhead_start_s", "overhead_setup_s",
    "overhead_readings_s", "overhead_engine_stop_s", "overhead_other_s",
)  # fmt: skip
WORKER_PHASES = ("main", "setup", "rollouts", "rollouts_end", "readings")


@dataclass(slots=True)
class HarnessStamps:
    """time.monotonic() at the harness's phase boundaries (None: not reached)."""

    begin: float
    sources_ready: float | None = None
    engine_ready: float | None = None
    spawn: float | None = None
    exited: float | None = None
    engine_stopped: float | None = None


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(0.0, b - a)


def overhead(
    h: HarnessStamps, worker_phases: dict[str, Any] | None, wall_s: float, rollout_wall_s: float | None
) -> dict[str, float | None]:
    """The overhead_* fields of a point's record. Phases the point never reached are None;
    overhead_other_s is what the others and the rollouts leave of wall_s."""
    w: dict[str, float | None] = {k: None for k in WORKER_PHASES}
    if worker_phases and all(isinstance(worker_phases.get(k), (int, float)) for k in WORKER_PHASES):
        w = {k: float(worker_phases[k]) for k in WORKER_PHASES}
    before, after = _span(w["setup"], w["rollouts"]), _span(w["rollouts_end"], w["readings"])
    fields: dict[str, float | None] = {
        "overhead_sources_s": _span(h.begin, h.sources_ready),
        "overhead_engine_start_s": _span(h.sources_ready, h.engine_ready),
        "overhead_start_s": _span(h.spawn, w["main"]),
        "overhead_setup_s": _span(w["main"], w["setup"]),
        "overhead_readings_s": None if before is None or after is None else before + after,
        "overhead_engine_stop_s": _span(h.exited, h.engine_stopped),
    }
    known = sum(v for v in fields.values() if v is not None) + (rollout_wall_s or 0.0)
    fields["overhead_other_s"] = max(0.0, wall_s - known)
    return {k: None if v is None else round(v, 4) for k, v in fields.items()}


PHASE_LABELS = {
    "overhead_sources_s": "sources",
    "overhead_engine_start_s": "engine start",
    "overhead_start_s": "worker start",
    "overhead_setup_s": "setup",
    "overhead_readings_s": "readings",
    "overhead_engine_stop_s": "engine stop",
    "overhead_other_s": "other",
}
# CPU seconds of the two processes during the rollouts, where a record has them (records older
# than schema 4 do not).
CPU_FIELDS = ("client_cpu_s", "engine_cpu_s")


def point_overhead(record: Any) -> float | None:
    """wall_s - rollout_wall_s: what the point cost besides its rollouts."""
    wall, rollouts = getattr(record, "wall_s", None), getattr(record, "rollout_wall_s", None)
    return None if wall is None or rollouts is None else wall - rollouts


@dataclass(frozen=True, slots=True)
class TimingSummary:
    """A sweep's time: its points' wall and rollout seconds, and the median overhead per point."""

    points: int
    wall_s: float
    rollout_s: float
    median_overhead_s: float | None
    phase_s: dict[str, float]  # each overhead phase summed over the points

    @classmethod
    def of(cls, records: list[Any]) -> TimingSummary:
        timed = [r for r in records if getattr(r, "wall_s", None) is not None]
        overheads = sorted(o for o in (point_overhead(r) for r in timed) if o is not None)
        n = len(overheads)
        median = None if not n else (overheads[n // 2] + overheads[(n - 1) // 2]) / 2
        phases = {k: sum(getattr(r, k, None) or 0.0 for r in timed) for k in OVERHEAD_FIELDS}
        return cls(
            len(timed),
            sum(r.wall_s for r in timed),
            sum(r.rollout_wall_s or 0.0 for r in timed),
            median,
            phases,
        )
