"""`mmbench plot`: the figures of a results directory, one PNG or SVG file each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmbench.cli import common as c
from mmbench.results import load


@c.handle_errors
def plot(
    results_dir: Annotated[
        Path, typer.Argument(help="a results directory (or its results.json)", show_default=False)
    ],
    out: Annotated[
        Path | None, typer.Option(help="directory for the figures [RESULTS_DIR/plots]", show_default=False)
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="file format: png, svg")] = "png",
) -> None:
    """Draw a results directory's figures: retained memory, bytes shipped and peak against K.

    Where the results have them, also the memory timeline and the engine-cache trade-off."""
    # Imported here, not at the top: matplotlib takes a good part of a second to import, and only
    # this command should pay for it (cli/__init__ imports every command module).
    from mmbench.reporters.plot import check_format, plot_results

    fmt = check_format(fmt)
    results = load(results_dir)
    base = results_dir if results_dir.is_dir() else results_dir.parent
    for path in plot_results(results, out or base / "plots", fmt, where=str(results_dir), results_dir=base):
        typer.echo(str(path))
