"""The CLI reference, docs/cli.md, written from the Typer app by Typer's own markdown writer (what
`typer mmbench.cli utils docs` prints), so that it says what `--help` says: `make docs` writes it,
and tests/unit/test_docs.py fails while the committed page is not what this writes."""

from __future__ import annotations

import html
import sys
from pathlib import Path

import typer
from typer.cli import MARKUP_MODE_KEY, get_docs_for_click

from mmbench.cli import app

DEFAULT_PATH = Path("docs/cli.md")
NOTE = (
    "<!-- Written by `make docs` (python -m mmbench.cli.reference) from the command line's own "
    "definitions: do not edit by hand. -->"
)
INTRO = (
    "Every command, argument and option, as `mmbench COMMAND --help` prints them. How the commands "
    "fit together, with examples: [Commands, point flags and scenario files](usage.md)."
)


def markdown() -> str:
    command = typer.main.get_command(app)
    # As `typer ... utils docs` does: help texts go through the app's rich markup, as --help shows
    # them; the app's context settings too (-h beside --help).
    ctx = typer.Context(command, obj={MARKUP_MODE_KEY: app.rich_markup_mode}, **command.context_settings)
    body = get_docs_for_click(obj=command, ctx=ctx, name="mmbench", title="CLI reference: `mmbench`")
    # The markup's HTML escapes (&#x27; for ') read badly in the page's source; markdown needs none.
    title, _, rest = html.unescape(body).strip().partition("\n\n")
    return f"{NOTE}\n\n{title}\n\n{INTRO}\n\n{rest}\n"


def main(argv: list[str]) -> None:
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.write_text(markdown(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
