"""The command line: one module per command, mounted here. Commands only parse, call one core
function and hand its result to a reporter."""

from __future__ import annotations

import inspect
from collections.abc import Callable

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


def help_text(doc: str | None) -> str:
    """A command's docstring as its help: each paragraph one line, as its sentences read. Typer's rich
    help keeps a docstring's line breaks in the list of commands, and Click's short help cuts it at 45
    characters, so a docstring wrapped to the source's width broke mid-sentence in both."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _mount(*commands: Callable[..., None]) -> None:
    for command in commands:
        text = help_text(command.__doc__)
        # The first paragraph, whole, is the line in `mmbench --help`; the rest are in `mmbench CMD --help`.
        app.command(help=text, short_help=text.partition("\n\n")[0])(command)


_mount(run, sweep, scenarios, report, plot, profile, compare, plan, engine, compat, fidelity)


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
