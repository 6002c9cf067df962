"""Sweeps: run every point of a scenario through the harness and keep every result at once."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mmbench.config import PointConfig
from mmbench.extrapolate import extrapolate
from mmbench.measure.environment import environment
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import PointRecord, ResultsFile, append_point, save
from mmbench.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    index: int  # 1-based position in the sweep
    total: int
    config: PointConfig
    repeat: int


def plan(scenario: Scenario) -> list[PlannedPoint]:
    configs = scenario.points()
    items = [(c, r) for c in configs for r in range(scenario.repeats)]
    return [PlannedPoint(i + 1, len(items), c, r) for i, (c, r) in enumerate(items)]


OnStart = Callable[[PlannedPoint], None]
OnDone = Callable[[PlannedPoint, PointRecord], None]


def run_sweep(
    scenario: Scenario,
    out_dir: Path | None,
    options: HarnessOptions | None = None,
    on_start: OnStart | None = None,
    on_done: OnDone | None = None,
) -> ResultsFile:
    """Measure every planned point; after each one, append it to the log and rewrite the files."""
    with tempfile.TemporaryDirectory(prefix="mmbench-sources-") as tmp:
        opts = options or HarnessOptions()
        if opts.source_cache is None:
            opts = replace(opts, source_cache=Path(tmp))
        return _run(scenario, out_dir, opts, on_start, on_done)


def _run(
    scenario: Scenario, out_dir: Path | None, options: HarnessOptions, on_start: OnStart | None,
    on_done: OnDone | None,
) -> ResultsFile:  # fmt: skip
    env = environment()
    records: list[PointRecord] = []
    results = ResultsFile(env, scenario.to_dict(), records)
    for point in plan(scenario):
        if on_start:
            on_start(point)
        record = measure_point(point.config, point.repeat, options)
        records.append(record)
        shown = extrapolate(records) if scenario.extrapolate else list(records)
        results = ResultsFile(env, scenario.to_dict(), shown)
        if out_dir is not None:
            append_point(out_dir, record)
            save(out_dir, results)
        if on_done:
            on_done(point, record)
    return results
