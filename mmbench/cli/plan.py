"""`mmbench plan`: what a machine can run, per mode, before anything runs."""

from __future__ import annotations

from typing import Annotated

import psutil
import typer

from mmbench.analysis.plan import plan as make_plan
from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.reporters.plan_report import plan_table, render_json, render_markdown
from mmbench.units import parse_size

FORMATS = ("table", "markdown", "json")


@c.handle_errors
@c.with_point_flags
def plan(
    point_flags: dict[str, str | None],
    memory: Annotated[
        str | None,
        typer.Option(
            help="the machine's memory, e.g. 24GiB (default: this machine's total)", show_default=False
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"output: {', '.join(FORMATS)}")] = "table",
) -> None:
    """Per mode, the largest K whose predicted peak fits a machine's memory (nothing runs)."""
    if fmt not in FORMATS:
        raise MmbenchError(f"--format: unknown value {fmt!r}; choose one of: {', '.join(FORMATS)}")
    flags = dict(point_flags)
    if flags.pop("rollouts") is not None:
        raise MmbenchError("--rollouts: plan finds the largest K itself; give the other point flags")
    modes = [m.strip() for m in (flags.pop("mode") or "").split(",") if m.strip()]
    base = c.single_point(flags)
    budget = parse_size(memory, "--memory") if memory is not None else int(psutil.virtual_memory().total)
    result = make_plan(base, budget, modes or None)
    if fmt == "table":
        c.console.print(plan_table(result))
    else:
        typer.echo((render_markdown if fmt == "markdown" else render_json)(result), nl=False)
