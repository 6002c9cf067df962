"""`mmbench compare`: a head results file against a base one; exit 1 on a significant regression."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from mmbench import results
from mmbench.analysis.compare import METRICS
from mmbench.analysis.compare import compare as compare_results
from mmbench.cli import common as c
from mmbench.reporters.compare_report import compare_markdown, compare_table
from mmbench.units import parse_size

FORMATS = ("table", "markdown")


def parse_threshold(text: str) -> float:
    """'10%' and '10' both mean ten percent: one rule, so '0.1' is 0.1 % (stricter, never laxer)."""
    body = text.strip().removesuffix("%").strip()
    try:
        value = float(body)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise c.MmbenchError(f"--threshold: {text!r} is not a percentage >= 0; use e.g. 10% or 10")
    return value


@c.handle_errors
def compare(
    base: Annotated[Path, typer.Argument(help="base results directory or results.json", show_default=False)],
    head: Annotated[Path, typer.Argument(help="head results directory or results.json", show_default=False)],
    metric: Annotated[
        str, typer.Option(help=f"what to compare: {', '.join(METRICS)}", show_default=True)
    ] = "retained",
    threshold: Annotated[
        str, typer.Option(help="a significant increase above this percentage fails (10% or 10)")
    ] = "10%",
    output_format: Annotated[str, typer.Option("--format", help=f"output: {', '.join(FORMATS)}")] = "table",
    min_change: Annotated[
        str,
        typer.Option(help="a point must also grow by more than this to fail (the noise floor of RSS deltas)"),
    ] = "2MiB",
) -> None:
    """Compare HEAD against BASE point by point; exit 1 on a significant regression over the threshold."""
    if output_format not in FORMATS:
        raise c.MmbenchError(f"unknown format {output_format!r}; choose one of: {', '.join(FORMATS)}")
    limit = parse_threshold(threshold)
    floor = parse_size(min_change, "--min-change")
    comparison = compare_results(results.load(base), results.load(head), metric, limit, floor)
    if output_format == "markdown":
        # plain print: rich would wrap long rows and eat the markdown's square brackets
        typer.echo(compare_markdown(comparison), nl=False)
    else:
        c.console.print(compare_table(comparison))
    if comparison.regressions:
        n = len(comparison.regressions)
        c.err_console.print(
            f"mmbench: {n} regression{'' if n == 1 else 's'} over {limit:g} % in {metric} (see the table)",
            markup=False,
        )
    c.exit_with(comparison.exit_code)
