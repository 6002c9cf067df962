"""Sweeps: run every point of a scenario through the harness and keep every result at once."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mmbench.backends import check_runnable
from mmbench.config import PointConfig, field_names
from mmbench.errors import MmbenchError
from mmbench.extrapolate import extrapolate
from mmbench.measure.environment import environment
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.measure.timeline import TIMELINES_DIR
from mmbench.results import PointRecord, ResultsFile, append_point, read_points_log, save
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
    finished: list[PointRecord] | None = None,
) -> ResultsFile:
    """Measure every planned point not already in `finished`; after each one, append it to the log
    and rewrite the results files, so that an interrupted sweep loses at most the point in flight."""
    with tempfile.TemporaryDirectory(prefix="mmbench-sources-") as tmp:
        opts = options or HarnessOptions()
        if opts.source_cache is None:
            opts = replace(opts, source_cache=Path(tmp))
        if opts.timeline_dir is None and out_dir is not None:
            opts = replace(opts, timeline_dir=out_dir / TIMELINES_DIR)
        return _run(scenario, out_dir, opts, on_start, on_done, finished or [])


def _ordered(scenario: Scenario, by_key: dict[tuple[object, ...], PointRecord]) -> list[PointRecord]:
    keys = [(*(getattr(p.config, k) for k in field_names()), p.repeat) for p in plan(scenario)]
    return [by_key[k] for k in keys if k in by_key]


def results_of(scenario: Scenario, env: dict[str, object], records: list[PointRecord]) -> ResultsFile:
    """The results file for these records: in plan order, extrapolated where the scenario asks."""
    ordered = _ordered(scenario, {r.key(): r for r in records})
    shown = extrapolate(ordered) if scenario.extrapolate else ordered
    return ResultsFile(env, scenario.to_dict(), shown)


def rebuild(scenario: Scenario, out_dir: Path) -> list[PointRecord]:
    """Rewrite results.json and results.csv from the log (after an interrupt between the two)."""
    records = read_points_log(out_dir)
    if records:
        save(out_dir, results_of(scenario, environment(), records))
    return records


def _run(
    scenario: Scenario, out_dir: Path | None, options: HarnessOptions, on_start: OnStart | None,
    on_done: OnDone | None, finished: list[PointRecord],
) -> ResultsFile:  # fmt: skip
    env = environment()
    planned = plan(scenario)
    for point in planned:  # before any point runs
        check_runnable(point.config)
    planned_keys = {(*(getattr(p.config, k) for k in field_names()), p.repeat) for p in planned}
    foreign = [r for r in finished if r.key() not in planned_keys]
    if foreign:
        raise MmbenchError(
            f"the results to resume hold a point this sweep does not plan ({foreign[0].mode}, "
            f"K={foreign[0].rollouts}, repeat {foreign[0].repeat}); resume with the same scenario and flags"
        )
    records: dict[tuple[object, ...], PointRecord] = {r.key(): r for r in finished}
    results = results_of(scenario, env, list(records.values()))
    for point in planned:
        key = (*(getattr(point.config, k) for k in field_names()), point.repeat)
        if key in records:
            continue
        if on_start:
            on_start(point)
        record = measure_point(point.config, point.repeat, options)
        records[key] = record
        results = results_of(scenario, env, list(records.values()))
        if out_dir is not None:
            append_point(out_dir, record)
            save(out_dir, results)
        if on_done:
            on_done(point, record)
    if out_dir is not None:
        save(out_dir, results)
    return results
