"""`mmbench run`: measure one point in fresh processes and print what it retained, peaked at and shipped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmbench.analysis.system import system_rows
from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.measure.environment import environment
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.measure.timeline import TIMELINES_DIR
from mmbench.reporters.system_table import system_tables
from mmbench.reporters.table import point_table
from mmbench.results import ResultsFile, atomic_write, to_json


@c.handle_errors
@c.with_point_flags
@c.with_engine_flags(*c.POINT_ENGINE_FLAGS)
def run(
    point_flags: dict[str, str | None],
    engine_flags: c.EngineFlags,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the point as a results file (same schema as sweep)")
    ] = None,
    memray: Annotated[
        bool, typer.Option(help="also track the worker with memray (heap high-water mark)")
    ] = False,
    force: Annotated[bool, typer.Option(help="run even when preflight predicts it will not fit")] = False,
    max_memory: c.MaxMemory = None,
) -> None:
    """Measure one point (one mode, one parameter set) in a fresh worker and engine process."""
    engine = engine_flags.choose()
    config = c.single_point(point_flags, engine_flags.point_defaults(engine))
    engine.check([config])  # before it runs (the harness does not check)
    memray_dir = (json_out.parent if json_out else Path.cwd()) / "memray" if memray else None
    with c.console.status(f"measuring {config.mode}, K={config.rollouts}, N={config.turns} ..."):
        record = measure_point(
            config,
            0,
            HarnessOptions(
                memray_dir=memray_dir,
                force=force,
                max_memory=c.parse_max_memory(max_memory),
                timeline_dir=json_out.parent / TIMELINES_DIR if json_out else None,
                engine=engine,
            ),
        )
    if record.status == "skipped":
        raise MmbenchError(f"{record.cause}; use a smaller point, or --force to run it anyway")
    c.console.print(point_table(record))
    for table in system_tables(system_rows([record])):  # with the trainer stage
        c.console.print(table)
    if json_out is not None:
        results = ResultsFile(
            environment(), {"name": "run", "description": "one point from mmbench run"}, [record]
        )
        atomic_write(json_out, to_json(results))
        c.console.print(f"wrote {json_out}")
    if not record.ok:
        c.err_console.print(f"mmbench: point failed: {record.cause}", markup=False)
        c.exit_with(1)
