"""Sweeps: run every point of a scenario through the harness and keep every result at once.

Points are measured by a runner: on this machine one after the other (the default), or on a
cluster (mmbench/cluster/), which hands records back as they arrive, in any order.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from mmbench.analysis.extrapolate import extrapolate
from mmbench.backends import check_runnable
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.facts import facts_of
from mmbench.measure.engine_pool import EnginePool, OnEngineStart, engine_pool, load
from mmbench.measure.engines import Vllm
from mmbench.measure.environment import environment
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.measure.machines import machine_block
from mmbench.measure.timeline import TIMELINES_DIR
from mmbench.record import point_key
from mmbench.results import PointRecord, ResultsFile, append_point, read_points_log, save
from mmbench.sweep.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    index: int  # 1-based position in the sweep
    total: int
    config: PointConfig
    repeat: int

    @property
    def key(self) -> tuple[Any, ...]:
        """The key of the point's record (PointRecord.key)."""
        return point_key(self.config, self.repeat)


def plan(scenario: Scenario) -> list[PlannedPoint]:
    configs = scenario.points()
    items = [(c, r) for c in configs for r in range(scenario.repeats)]
    return [PlannedPoint(i + 1, len(items), c, r) for i, (c, r) in enumerate(items)]


OnStart = Callable[[PlannedPoint], None]
OnDone = Callable[[PlannedPoint, PointRecord], None]
OnBegin = Callable[[], None]
# Points with their records, as a runner hands them back together.
Finished = list[tuple[PlannedPoint, PointRecord]]


class Runner(Protocol):
    def __call__(
        self, todo: list[PlannedPoint], options: HarnessOptions, on_start: OnStart | None
    ) -> Generator[Finished, None, None]:
        """Measure every point of `todo` once; yield the records as they finish, in batches in
        any order. Closing the iterator early (Ctrl-C) stops what is queued."""
        ...


def measure_here(config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
    """One point measured on this machine, with the machine's block: the one place a sweep calls
    the harness, locally and on every cluster worker."""
    return replace(measure_point(config, repeat, options), machine=machine_block())


def run_locally(
    todo: list[PlannedPoint], options: HarnessOptions, on_start: OnStart | None
) -> Generator[Finished, None, None]:
    """The default runner: one point after the other, on this machine."""
    for point in todo:
        if on_start:
            on_start(point)
        yield [(point, measure_here(point.config, point.repeat, options))]


def run_sweep(
    scenario: Scenario,
    out_dir: Path | None,
    options: HarnessOptions | None = None,
    on_start: OnStart | None = None,
    on_done: OnDone | None = None,
    finished: list[PointRecord] | None = None,
    runner: Runner = run_locally,
    on_begin: OnBegin | None = None,
    fresh_engine: bool = False,
    on_engine_start: OnEngineStart | None = None,
) -> ResultsFile:
    """Measure every planned point not already in `finished`; as each one ends, append it to the log
    and rewrite the results files, so that an interrupted sweep loses at most the points in flight.
    `on_begin` is called once every point is checked, before the first runs (a CLI says then what
    it will do: a bad point or engine is its one line of output). A real engine is started once for
    the points that share its configuration and reset between them, or with `fresh_engine` once
    per point (mmbench.measure.engine_pool); `on_engine_start` is told of each start."""
    with tempfile.TemporaryDirectory(prefix="mmbench-sources-") as tmp, contextlib.ExitStack() as stack:
        opts = options or HarnessOptions()
        if opts.source_cache is None:
            opts = replace(opts, source_cache=Path(tmp))
        if opts.timeline_dir is None and out_dir is not None:
            opts = replace(opts, timeline_dir=out_dir / TIMELINES_DIR)
        if opts.engine_pool is None and isinstance(opts.engine, Vllm):
            # stopped however the sweep ends, Ctrl-C included
            pool = stack.enter_context(engine_pool(on_engine_start, fresh=fresh_engine))
            opts = replace(opts, engine_pool=pool)
        return _run(scenario, out_dir, opts, on_start, on_done, finished or [], runner, on_begin)


def _by_engine(todo: list[PlannedPoint], engine: Vllm, pool: EnginePool) -> list[PlannedPoint]:
    """The points grouped by the engine they need, by first appearance across groups, so that each
    engine configuration is started once; within a group in ascending load (rollouts x turns x
    images), then plan order: an engine keeps state that the largest load it served built, so a
    point never follows a larger one on the same engine (mmbench.measure.engine_pool)."""
    first: dict[Hashable, int] = {}
    keys = [pool.key(engine, p.config, facts_of(p.config).mode.media == "file") for p in todo]
    for i, key in enumerate(keys):
        first.setdefault(key, i)

    def order(i: int) -> tuple[int, int, int]:
        return first[keys[i]], load(todo[i].config), i

    return [todo[i] for i in sorted(range(len(todo)), key=order)]


def _ordered(scenario: Scenario, by_key: dict[tuple[object, ...], PointRecord]) -> list[PointRecord]:
    return [by_key[p.key] for p in plan(scenario) if p.key in by_key]


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
    on_done: OnDone | None, finished: list[PointRecord], runner: Runner, on_begin: OnBegin | None,
) -> ResultsFile:  # fmt: skip
    env = environment()
    planned = plan(scenario)
    for point in planned:  # before any point runs
        check_runnable(point.config)
    planned_keys = {p.key for p in planned}
    foreign = [r for r in finished if r.key() not in planned_keys]
    if foreign:
        raise MmbenchError(
            f"the results to resume hold a point this sweep does not plan ({foreign[0].config.mode}, "
            f"K={foreign[0].config.rollouts}, repeat {foreign[0].repeat}); resume with the same scenario and "
            "flags"
        )
    records: dict[tuple[object, ...], PointRecord] = {r.key(): r for r in finished}
    todo = [p for p in planned if p.key not in records]
    if options.engine_pool is not None and not options.engine_pool.fresh and isinstance(options.engine, Vllm):
        todo = _by_engine(todo, options.engine, options.engine_pool)
    # Every point fits the engine: checked here, once for the sweep before the first point runs (an
    # external engine probed, vLLM's environment found), and not again per point by the harness.
    options.engine.check([p.config for p in todo])
    if on_begin:
        on_begin()
    rewrites, unsaved = _Rewrites(), False
    try:
        # closing(): an interrupt between two batches still stops the runner (a cluster's queue).
        with contextlib.closing(runner(todo, options, on_start)) as batches:
            for batch in batches:
                for point, record in batch:
                    records[point.key] = record
                    if out_dir is not None:
                        append_point(out_dir, record)  # each point durable before anything else
                unsaved = True
                if out_dir is not None and rewrites.due():
                    rewrites.save(out_dir, results_of(scenario, env, list(records.values())))
                    unsaved = False
                if on_done:
                    for point, record in batch:
                        on_done(point, record)
    finally:
        if out_dir is not None and unsaved:  # interrupted between rewrites: the files catch up
            save(out_dir, results_of(scenario, env, list(records.values())))
    results = results_of(scenario, env, list(records.values()))
    if out_dir is not None:
        save(out_dir, results)
    return results


class _Rewrites:
    """results.json and .csv are rewritten after each batch of records, but for at most a fifth
    of the sweep's time: with hundreds of fast points (a cluster) one rewrite takes a second, and
    points.jsonl already holds every record durably. Points of a local sweep take seconds, so
    there every point still rewrites them."""

    SHARE = 5

    def __init__(self) -> None:
        self._next = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def save(self, out_dir: Path, results: ResultsFile) -> None:
        t0 = time.monotonic()
        save(out_dir, results)
        took = time.monotonic() - t0
        self._next = t0 + took * self.SHARE
