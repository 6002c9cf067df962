"""`mmbench report`: the pull request's table and a per-mode summary from a results directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mmbench.analysis.report import METRICS, build_report
from mmbench.analysis.system import system_rows
from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.reporters.fleet_report import fleet_markdown, fleet_table
from mmbench.reporters.markdown import render_csv, render_json, render_markdown
from mmbench.reporters.report_table import report_tables
from mmbench.reporters.system_table import system_markdown, system_tables
from mmbench.results import load

FORMATS = ("table", "markdown", "csv", "json")
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _check(flag: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    # Checked here rather than by a Typer Enum so that the error is the usual one line.
    if value not in valid:
        raise MmbenchError(f"{flag}: unknown value {value!r}; choose one of: {', '.join(valid)}")


def _append_summary(markdown: str) -> None:
    target = os.environ.get(SUMMARY_ENV)
    if not target:
        c.err_console.print(f"mmbench: {SUMMARY_ENV} is not set; no step summary written", markup=False)
        return
    path = Path(target)
    try:
        # A blank line first, so that a report appended after other content starts its own block.
        lead = "\n" if path.exists() and path.stat().st_size > 0 else ""
        with open(path, "a", encoding="utf-8") as f:
            f.write(lead + markdown)
    except OSError as exc:
        raise MmbenchError(f"{SUMMARY_ENV}={target}: cannot append ({exc.strerror})") from None
    c.err_console.print(f"mmbench: report appended to {SUMMARY_ENV} ({target})", markup=False)


@c.handle_errors
def report(
    results_dir: Annotated[
        Path, typer.Argument(help="a results directory (or its results.json)", show_default=False)
    ],
    fmt: Annotated[str, typer.Option("--format", help=f"output: {', '.join(FORMATS)}")] = "table",
    metric: Annotated[
        str, typer.Option(help="retained figure: live (after malloc_trim) or raw (RSS as is)")
    ] = "live",
    summary: Annotated[
        bool, typer.Option("--summary", help=f"also append the markdown to ${SUMMARY_ENV} (GitHub Actions)")
    ] = False,
) -> None:
    """Print retained memory per K and mode with reductions against full, and a per-mode summary."""
    _check("--format", fmt, FORMATS)
    _check("--metric", metric, list(METRICS))
    try:
        results = load(results_dir)
        built = build_report(results, metric)
    except MmbenchError as exc:
        text = str(exc)
        # load() names the file already; build_report's own complaints do not.
        raise MmbenchError(text if text.startswith(str(results_dir)) else f"{results_dir}: {text}") from None
    system = system_rows(results.points)  # points that ran the trainer stage (issue 31)
    fleet = fleet_markdown(results.points)  # points on a fleet (issue 30)
    markdown = (
        render_markdown(built)
        + ("\n" + system_markdown(system) if system else "")
        + ("\n## The fleet\n\n" + fleet if fleet else "")
    )
    if fmt == "table":
        for table in [*report_tables(built), *system_tables(system)]:
            c.console.print(table)
        fleet_tab = fleet_table(results.points)
        if fleet_tab is not None:
            c.console.print(fleet_tab)
    elif fmt == "markdown":
        typer.echo(markdown, nl=False)
    else:
        render = {"csv": render_csv, "json": render_json}[fmt]
        typer.echo(render(built), nl=False)
    if summary:
        _append_summary(markdown)
