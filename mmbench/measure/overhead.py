"""Where a point's wall time goes besides its rollouts: the instrument's own cost, phase by phase.

The harness stamps its side (time.monotonic()) and the worker stamps its own phases on the same
clock (CLOCK_MONOTONIC is system-wide on Linux), so that the phases of the two processes line up:

- sources_s: making the point's source images (the environment's work), where an earlier point of
  the sweep has not made them;
- engine_start_s: from then until the engine answered and its baseline was read;
- worker_start_s: from the worker's request until its main() runs (process start and imports, or
  the fork);
- setup_s: from main() until the world is built and warmed up and the collector frozen;
- readings_s: the baseline readings before the rollouts, and every reading, trim and the ledger
  after them;
- engine_stop_s: from the worker's exit until the engine's final stats are read and it is stopped;
- other_s: what is left of wall_s: writing the result, the worker's exit, bookkeeping.

They are a record's `timing.overhead` (mmbench.record.Overhead).

A fork server that has to start for the point (a sweep's first point) is counted in the phase
that waited for it: the worker's server starts as the point begins, beside the sources and the
engine, and what is left of its start shows in worker_start_s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mmbench.measure.worker_io import WorkerPhases
from mmbench.record import Overhead, PointRecord

# Overhead's fields, in its order: the phases of a point's wall time besides its rollouts.
OVERHEAD_FIELDS = tuple(f.name for f in fields(Overhead))
# A worker that wrote no result reached none of its phases.
WORKER_UNKNOWN: dict[str, float | None] = {f.name: None for f in fields(WorkerPhases)}


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
    h: HarnessStamps, worker: WorkerPhases | None, wall_s: float, rollout_wall_s: float | None
) -> Overhead:
    """A point's record's timing.overhead. Phases the point never reached are None; other_s is what
    the others and the rollouts leave of wall_s."""
    w = WORKER_UNKNOWN if worker is None else asdict(worker)
    before, after = _span(w["setup"], w["rollouts"]), _span(w["rollouts_end"], w["readings"])
    phases: dict[str, float | None] = {
        "sources_s": _span(h.begin, h.sources_ready),
        "engine_start_s": _span(h.sources_ready, h.engine_ready),
        "worker_start_s": _span(h.spawn, w["main"]),
        "setup_s": _span(w["main"], w["setup"]),
        "readings_s": None if before is None or after is None else before + after,
        "engine_stop_s": _span(h.exited, h.engine_stopped),
    }
    known = sum(v for v in phases.values() if v is not None) + (rollout_wall_s or 0.0)
    phases["other_s"] = max(0.0, wall_s - known)
    return Overhead(**{k: None if v is None else round(v, 4) for k, v in phases.items()})


# Overhead's field -> its column's label.
PHASE_LABELS = {
    "sources_s": "sources",
    "engine_start_s": "engine start",
    "worker_start_s": "worker start",
    "setup_s": "setup",
    "readings_s": "readings",
    "engine_stop_s": "engine stop",
    "other_s": "other",
}
# CPU seconds of the two processes during the rollouts, where a record has them (records older
# than schema 4 do not): dotted path -> its column's label.
CPU_FIELDS = {"client.cpu_s": "client cpu", "engine.figures.cpu_s": "engine cpu"}


def point_overhead(record: PointRecord) -> float | None:
    """wall_s - rollout_wall_s: what the point cost besides its rollouts."""
    wall, rollouts = record.timing.wall_s, record.timing.rollout_wall_s
    return None if wall is None or rollouts is None else wall - rollouts


@dataclass(frozen=True, slots=True)
class TimingSummary:
    """A sweep's time: its points' wall and rollout seconds, and the median overhead per point."""

    points: int
    wall_s: float
    rollout_s: float
    median_overhead_s: float | None
    phase_s: dict[str, float]  # each overhead phase (Overhead's field) summed over the points
    # engines started for a point (a reused one is reset instead), and the seconds they took
    engine_starts: int = 0
    engine_start_s: float = 0.0
    # the median overhead of the points, their engine starts left out: what a point costs besides
    median_overhead_without_starts_s: float | None = None

    @classmethod
    def of(cls, records: list[PointRecord]) -> TimingSummary:
        timed = [r for r in records if r.timing.wall_s is not None]
        overheads = [o for o in (point_overhead(r) for r in timed) if o is not None]
        phases = {k: sum(getattr(r.timing.overhead, k) or 0.0 for r in timed) for k in OVERHEAD_FIELDS}
        started = [r for r in timed if r.engine.reused == 0 and r.timing.overhead.engine_start_s is not None]
        without = [
            o - (r.timing.overhead.engine_start_s or 0.0 if r.engine.reused == 0 else 0.0)
            for r in timed
            if (o := point_overhead(r)) is not None
        ]
        return cls(
            len(timed),
            sum(r.timing.wall_s or 0.0 for r in timed),
            sum(r.timing.rollout_wall_s or 0.0 for r in timed),
            _median(overheads),
            phases,
            len(started),
            sum(r.timing.overhead.engine_start_s or 0.0 for r in started),
            _median(without),
        )


def _median(values: list[float]) -> float | None:
    ordered, n = sorted(values), len(values)
    return None if not n else (ordered[n // 2] + ordered[(n - 1) // 2]) / 2
