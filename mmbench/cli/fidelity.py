"""`mmbench fidelity`: the embedded engine's results against vLLM's on the same points."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmbench import results
from mmbench.analysis.engine_fidelity import engine_rows
from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.reporters.engine_fidelity_report import engine_json, engine_markdown, engine_table, process_table

FORMATS = ("table", "markdown", "json")


@c.handle_errors
def fidelity(
    embedded: Annotated[
        Path, typer.Argument(help="results measured with the embedded engine (a directory or results.json)")
    ],
    vllm: Annotated[Path, typer.Argument(help="the same points measured with --engine vllm")],
    fmt: Annotated[str, typer.Option("--format", help=f"output: {', '.join(FORMATS)}")] = "table",
) -> None:
    """Compare the embedded engine with a real vLLM point by point: bytes, memory, cache, CPU, latency."""
    if fmt not in FORMATS:
        raise MmbenchError(f"--format: unknown value {fmt!r}; choose one of: {', '.join(FORMATS)}")
    rows = engine_rows(results.load(embedded), results.load(vllm))
    if fmt == "table":
        c.console.print(engine_table(rows))
        c.console.print(process_table(rows))
    else:
        typer.echo((engine_markdown if fmt == "markdown" else engine_json)(rows), nl=False)
