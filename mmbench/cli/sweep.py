"""`mmbench sweep`: a grid of points from a scenario file and/or flags, with progress and a table."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mmbench.analysis.report import build_report
from mmbench.analysis.system import system_rows
from mmbench.cli import common as c
from mmbench.cluster.address import ClusterSpec, parse_cluster
from mmbench.errors import MmbenchError
from mmbench.launch import DEFAULT_START_METHOD, check_start_method
from mmbench.measure.harness import HarnessOptions
from mmbench.reporters.fleet_report import fleet_table
from mmbench.reporters.report_table import per_mode_table
from mmbench.reporters.system_table import system_tables
from mmbench.reporters.table import fits_table, sweep_table
from mmbench.reporters.timings import timings_table
from mmbench.results import POINTS_LOG, RESULTS_JSON, PointRecord, ResultsFile, read_points_log
from mmbench.sweep.loop import PlannedPoint, Runner, plan, rebuild, run_locally, run_sweep
from mmbench.sweep.scenarios import Scenario, load_scenario
from mmbench.transports.registry import MODES

DEFAULT_GRID: dict[str, list[Any]] = {"mode": list(MODES), "rollouts": [1, 2, 4, 8]}


def default_out(name: str) -> Path:
    return c.runs_dir(name)


def _per_mode(results: ResultsFile) -> Table | None:
    """The report's per-mode table of memory, bytes and time, where the sweep compares modes."""
    try:
        return per_mode_table(build_report(results))
    except MmbenchError:  # no point measured: the sweep table says why
        return None


@contextlib.contextmanager
def _runner(spec: ClusterSpec | None) -> Iterator[Runner]:
    """This machine, or the cluster --cluster names (opened here, closed on the way out)."""
    if spec is None:
        yield run_locally
        return
    from mmbench.cluster.connect import cluster_runner

    with cluster_runner(spec, lambda cluster: c.console.print(cluster.describe(), highlight=False)) as runner:
        yield runner


@contextlib.contextmanager
def _stopped(progress: Progress) -> Iterator[Progress]:
    """The progress display, started once every point is checked (on_begin), stopped on the way out."""
    try:
        yield progress
    finally:
        progress.stop()  # nothing to stop where it never started


@c.handle_errors
@c.with_point_flags
@c.with_engine_flags()
def sweep(
    point_flags: dict[str, str | None],
    engine_flags: c.EngineFlags,
    scenario: Annotated[
        str | None, typer.Argument(help="scenario name (see `mmbench scenarios`) or path to a .toml file")
    ] = None,
    repeats: Annotated[int | None, typer.Option(min=1, max=100, help="repeats of every point [1]")] = None,
    out: Annotated[Path | None, typer.Option(help="results directory \\[runs/SCENARIO-UTCTIME]")] = None,
    memray: Annotated[bool, typer.Option(help="also track every worker with memray")] = False,
    force: Annotated[
        bool, typer.Option(help="run points even when preflight predicts they will not fit")
    ] = False,
    max_memory: c.MaxMemory = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="finish an interrupted sweep in this directory: only missing points run"),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="measure on a dask.distributed cluster: tcp://HOST:8786, a scheduler file, or local:N "
            "(N worker processes here)"
        ),
    ] = None,
    timings: Annotated[
        bool, typer.Option(help="also print where each point's time went (overhead phases, seconds)")
    ] = False,
    start_method: Annotated[
        str, typer.Option(hidden=True, help="fork (from a fork server) or exec (fresh interpreters)")
    ] = DEFAULT_START_METHOD,
) -> None:
    """Measure a grid of points (modes x rollouts x any other list); every flag takes a comma list."""
    method = check_start_method(start_method)
    if scenario is None:
        base = Scenario("flags", "a sweep from command-line flags", dict(DEFAULT_GRID))
    else:
        base = load_scenario(scenario)
    engine = engine_flags.choose(cluster is not None, base.engine)
    overrides = {**base.unset(engine.defaults), **c.point_values(point_flags), **engine_flags.engine_args()}
    chosen = base.with_overrides(overrides, repeats)
    spec = parse_cluster(cluster) if cluster is not None else None
    finished: list[PointRecord] = []
    if resume is not None:
        if out is not None and out != resume:
            raise MmbenchError("--resume names the results directory; leave out --out or give the same one")
        if not (resume / POINTS_LOG).exists():
            raise MmbenchError(f"{resume} holds no {POINTS_LOG} to resume from")
        out_dir = resume
        finished = read_points_log(resume)
    else:
        out_dir = out or default_out(chosen.name)
        if (out_dir / RESULTS_JSON).exists() or (out_dir / POINTS_LOG).exists():
            raise MmbenchError(f"{out_dir} already holds results; choose another --out, or --resume it")
    planned = plan(chosen)
    todo = len(planned) - len({r.key() for r in finished})
    options = HarnessOptions(
        memray_dir=out_dir / "memray" if memray else None,
        force=force,
        max_memory=c.parse_max_memory(max_memory),
        start_method=method,
        engine=engine,
    )
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    failed: list[PointRecord] = []
    progress = Progress(*columns, console=c.console, transient=False)
    task = progress.add_task("starting", total=len(planned), completed=len(planned) - todo)

    def on_begin() -> None:
        """Every point checked (the engine too): say what the sweep does, and show its progress."""
        c.console.print(
            f"[bold]{chosen.name}[/bold]: {chosen.description} — "
            f"{todo} of {len(planned)} points to run -> {out_dir}",
            highlight=False,
        )
        progress.start()

    with _runner(spec) as runner, _stopped(progress), c.sigterm_as_interrupt():

        def on_start(p: PlannedPoint) -> None:
            progress.update(
                task,
                description=f"point {p.index}/{p.total}: {p.config.mode} K={p.config.rollouts} r{p.repeat}",
            )

        def on_done(p: PlannedPoint, record: PointRecord) -> None:
            progress.advance(task)
            if record.status == "failed":
                failed.append(record)
                progress.console.print(f"[red]point {p.index} failed[/red]: {record.cause}", highlight=False)
            elif record.status == "skipped":
                progress.console.print(f"point {p.index} skipped: {record.cause}", highlight=False)

        def on_engine_start(what: str) -> None:
            # an engine start is its own line, apart from the points (it takes tens of seconds)
            progress.update(task, description=f"starting {what}")
            progress.console.print(f"engine: starting {what}", highlight=False)

        try:
            results = run_sweep(
                chosen, out_dir, options, on_start, on_done, finished, runner, on_begin,
                fresh_engine=engine_flags.fresh, on_engine_start=on_engine_start,
            )  # fmt: skip
        except KeyboardInterrupt:
            progress.stop()
            done = rebuild(chosen, out_dir)
            if done:
                c.console.print(sweep_table(done, title=f"{chosen.name} ({out_dir}), interrupted"))
            c.err_console.print(
                f"mmbench: interrupted: {len(done)} of {len(planned)} points are in {out_dir}; "
                f"finish with the same command and --resume {out_dir}",
                markup=False,
            )
            raise typer.Exit(130) from None
    c.console.print(sweep_table(results.points, title=f"{chosen.name} ({out_dir})"))
    per_mode = _per_mode(results)
    if per_mode is not None:
        c.console.print(per_mode)
    fits = fits_table(results.points)
    if fits is not None:
        c.console.print(fits)
    for table in system_tables(system_rows(results.points)):  # points that ran the trainer stage
        c.console.print(table)
    fleet = fleet_table(results.points)
    if fleet is not None:
        c.console.print(fleet)
    if timings:
        c.console.print(timings_table(results.points, title="where the time went"))
    routed = [r.engine.fleet.note for r in results.points if r.engine.fleet.note]
    if routed:  # an --engine-url that is several engines: its figures were not shown as the engine's
        c.console.print(f"note: {len(routed)} point(s): {routed[0]}", highlight=False)
    note = warm_engine_note(results.points)
    if note:
        c.console.print(note, highlight=False)
    c.console.print(f"results: {out_dir / 'results.json'} and {out_dir / 'results.csv'}", highlight=False)
    # One line however narrow the terminal, so that the commands can be copied whole.
    c.console.print(
        f"figures: mmbench plot {out_dir}    the whole report: mmbench report {out_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if failed:
        c.err_console.print(f"mmbench: {len(failed)} of {len(planned)} points failed", markup=False)
        c.exit_with(1)


def warm_engine_note(points: list[PointRecord]) -> str | None:
    """What a real engine's memory figures are measured above (None: no point ran on one)."""
    real = [r for r in points if r.engine.warmed is not None]
    if not real:
        return None
    note = (
        "note: vLLM's memory figures are above a warm engine's baseline: each engine served a small "
        "point of each mode before that mode's first point, and was reset before every point (docs/vllm.md)"
    )
    cold = sum(1 for r in real if not r.engine.warmed)
    if cold:
        note += (
            f"; {cold} point(s) ran on an engine not warmed (its warm-up failed): their engine figures "
            "include the state its first requests build once"
        )
    return note
