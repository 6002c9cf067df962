"""`mmbench plan --measure`: the largest K that fits a memory, found by measuring points.

Per mode the search starts at the model's typical K (mmbench.analysis.plan; its K where no typical
K is given) and measures: up by a quarter at a time while points fit, down by a quarter while they
do not, then a bisection between the largest K that fit and the smallest that did not. A point
fits when it ran and its measured system peak (the client's RSS at its peak, baseline included,
plus the engine's high-water mark: every process of a real vLLM's tree) is within the memory.
Every point runs under the watchdog with the memory as its limit on the worker and engine
together, so no point can take the machine down; one the watchdog stopped does not fit. Points are
kept in a results directory as a sweep's (points.jsonl, results.json): a search run again in it
measures only what it has not, and `mmbench report` reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmbench.config import MAX_ROLLOUTS, PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.environment import environment
from mmbench.measure.harness import EXCEEDED, HarnessOptions
from mmbench.record import point_key
from mmbench.results import PointRecord, ResultsFile, append_point, read_points_log, save
from mmbench.sweep.loop import measure_here

STEP = 0.25  # each step up or down moves K by this share of it (at least 1)
SCENARIO_NAME = "capacity"


def measured_system_peak(record: PointRecord) -> int | None:
    """The client's RSS at its peak (baseline included) plus the engine's: what the point took
    from the machine (None where the point did not measure it)."""
    parts = (record.client.rss.baseline_bytes, record.client.peak_bytes, record.engine.figures.peak_rss_bytes)
    if not record.ok or any(p is None for p in parts):
        return None
    return sum(p for p in parts if p is not None)


def stopped_for_memory(record: PointRecord) -> bool:
    """The watchdog stopped the point for its memory (or the kernel's OOM killer did)."""
    cause = record.cause or ""
    return record.status == "failed" and (cause.startswith(EXCEEDED) or "SIGKILL" in cause)


@dataclass(frozen=True, slots=True)
class Probe:
    rollouts: int
    record: PointRecord
    fits: bool
    reused: bool  # measured by an earlier run of the same search (its results directory)

    @property
    def system_peak_bytes(self) -> int | None:
        return measured_system_peak(self.record)


@dataclass(slots=True)
class ModeCapacity:
    mode: str
    model_rollouts: int  # the model's largest K (its plan)
    probes: list[Probe] = field(default_factory=list)  # in the order they were measured
    measured_rollouts: int = 0  # the largest K measured to fit (0: not even one rollout)
    capped: bool = False  # the search reached MAX_ROLLOUTS and it still fit
    error: str = ""  # a point failed for a reason other than memory: the search stopped there
    seconds: float = 0.0  # the search's wall time (reused points count nothing)
    typical_rollouts: int = 0  # the model's largest K for a typical run (0: not given)

    @property
    def ratio(self) -> float | None:
        """The model's K over the measured one (the plan's tightness; 1.0 = exact, above = unsafe)."""
        return self.model_rollouts / self.measured_rollouts if self.measured_rollouts else None

    @property
    def typical_ratio(self) -> float | None:
        """The typical run's K over the measured one."""
        if not self.measured_rollouts or not self.typical_rollouts:
            return None
        return self.typical_rollouts / self.measured_rollouts

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "model_rollouts": self.model_rollouts,
            "measured_rollouts": self.measured_rollouts, "ratio": self.ratio, "capped": self.capped,
            "typical_rollouts": self.typical_rollouts or None, "typical_ratio": self.typical_ratio,
            "error": self.error or None, "seconds": self.seconds,
            "probes": [
                {"rollouts": p.rollouts, "fits": p.fits, "status": p.record.status, "cause": p.record.cause,
                 "system_peak_bytes": p.system_peak_bytes,
                 "predicted_system_peak_bytes": p.record.prediction.system_peak_bytes, "reused": p.reused}
                for p in self.probes
            ],
        }  # fmt: skip


Measure = Callable[[int], Probe]


def search(start: int, measure: Measure, cap: int = MAX_ROLLOUTS) -> tuple[int, bool]:
    """The largest K that `measure` says fits (0 if not even K = 1 does), from `start`, and whether
    the search stopped at `cap` still fitting. A point that fails for another reason raises (the
    caller records it). Fitting is taken to be monotone in K: the first K that does not fit bounds."""
    k = min(max(1, start), cap)
    fit, no_fit = 0, None  # the largest K that fit, the smallest that did not
    if measure(k).fits:
        fit = k
        while fit < cap:
            nxt = min(cap, max(fit + 1, math.ceil(fit * (1 + STEP))))
            if not measure(nxt).fits:
                no_fit = nxt
                break
            fit = nxt
        if no_fit is None:
            return fit, True
    else:
        no_fit = k
        while no_fit > 1:
            nxt = max(1, min(no_fit - 1, math.floor(no_fit * (1 - STEP))))
            if measure(nxt).fits:
                fit = nxt
                break
            no_fit = nxt
        if fit == 0:
            return 0, False
    while no_fit - fit > 1:
        mid = (fit + no_fit) // 2
        if measure(mid).fits:
            fit = mid
        else:
            no_fit = mid
    return fit, False


class PointFailed(MmbenchError):
    """A point failed for a reason other than its memory: the search cannot say what fits."""


def scenario_block(base: PointConfig, memory: int, engine: str) -> dict[str, Any]:
    """What results.json says the search was: a resumed search must be the same one."""
    point = {k: v for k, v in base.to_dict().items() if k not in ("mode", "rollouts")}
    return {
        "name": SCENARIO_NAME,
        "description": "mmbench plan --measure: the largest K that fits, found by measuring points",
        "memory_bytes": memory, "engine": engine, "point": point,
    }  # fmt: skip


class Search:
    """One search's points, kept in `out_dir` (None: kept nowhere) and reused from it."""

    def __init__(
        self, base: PointConfig, memory: int, engine: str, out_dir: Path | None, options: HarnessOptions,
        on_point: Callable[[Probe], None] | None = None,
    ) -> None:  # fmt: skip
        self.base, self.memory, self.out_dir = base, memory, out_dir
        self.scenario = scenario_block(base, memory, engine)
        # the watchdog holds every point, worker and engine together, to the memory searched
        self.options = replace(options, force=True, max_memory=memory, memory_scope="system")
        self.on_point = on_point
        self.env = environment()
        self.records: dict[tuple[Any, ...], PointRecord] = {}
        if out_dir is not None:
            for record in read_points_log(out_dir):
                self.records[record.key()] = record

    def check_resumable(self) -> None:
        """A results directory of another search (or a sweep) cannot be resumed by this one."""
        for record in self.records.values():
            point = {k: v for k, v in record.config.to_dict().items() if k not in ("mode", "rollouts")}
            if point != self.scenario["point"]:
                raise MmbenchError(
                    f"{self.out_dir} holds points of another search (or a sweep): use a new --out"
                )

    def mode(self, mode: str, model_rollouts: int, typical_rollouts: int = 0) -> ModeCapacity:
        """The largest K of `mode` that fits, searched from the typical run's K where given (the
        nearer start), else from the model's."""
        found = ModeCapacity(mode, model_rollouts, typical_rollouts=typical_rollouts)
        t0 = time.monotonic()

        def measure(k: int) -> Probe:
            probe = self._probe(replace(self.base, mode=mode, rollouts=k))
            found.probes.append(probe)
            if not probe.fits and not stopped_for_memory(probe.record) and not probe.record.ok:
                raise PointFailed(f"{mode} K={k} failed: {probe.record.cause}")
            return probe

        try:
            found.measured_rollouts, found.capped = search(typical_rollouts or model_rollouts, measure)
        except PointFailed as exc:
            found.error = str(exc)
        found.seconds = time.monotonic() - t0
        return found

    def _probe(self, config: PointConfig) -> Probe:
        key = point_key(config, 0)  # PointRecord.key of its record
        record = self.records.get(key)
        reused = record is not None
        if record is None:
            record = measure_here(config, 0, self.options)
            self.records[key] = record
            if self.out_dir is not None:
                append_point(self.out_dir, record)
                save(self.out_dir, self.results())
        peak = measured_system_peak(record)
        probe = Probe(config.rollouts, record, peak is not None and peak <= self.memory, reused)
        if self.on_point:
            self.on_point(probe)
        return probe

    def results(self) -> ResultsFile:
        points = sorted(self.records.values(), key=lambda r: (r.config.mode, r.config.rollouts))
        return ResultsFile(self.env, self.scenario, points)
