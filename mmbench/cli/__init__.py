"""The command line: one module per command, mounted here. Commands only parse, call one core
function and hand its result to a reporter."""

from __future__ import annotations

import typer

from mmbench import __version__
from mmbench.cli.compare import compare
from mmbench.cli.compat import compat
from mmbench.cli.engine import engine
from mmbench.cli.fidelity import fidelity
from mmbench.cli.plan import plan
from mmbench.cli.plot import plot
from mmbench.cli.profile import profile
from mmbench.cli.report import report
from mmbench.cli.run import run
from mmbench.cli.scenarios import scenarios
from mmbench.cli.sweep import sweep

app = typer.Typer(
    name="mmbench",
    help="How much memory multimodal RL rollouts retain, peak at and ship, per transport mode.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(run)
app.command()(sweep)
app.command()(scenarios)
app.command()(report)
app.command()(plot)
app.command()(profile)
app.command()(compare)
app.command()(plan)
app.command()(engine)
app.command()(compat)
app.command()(fidelity)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    """mmbench: memory profiling and benchmarking of multimodal LLM rollouts."""


def main() -> None:
    app()
