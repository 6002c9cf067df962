"""`mmbench scenarios`: list the scenario files and what each shows."""

from __future__ import annotations

from rich.table import Table

from mmbench.cli import common as c
from mmbench.sweep.scenarios import list_scenarios


@c.handle_errors
def scenarios() -> None:
    """List the scenario files (./scenarios and the bundled ones) with their descriptions."""
    table = Table(header_style="bold")
    table.add_column("name")
    table.add_column("description")
    table.add_column("file")
    for name, description, path in list_scenarios():
        table.add_row(name, description, str(path))
    c.console.print(table)
