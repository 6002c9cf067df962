"""The docs cannot drift: every relative link in README.md and docs/ resolves (the file, and the
heading where it names one), every `mmbench ...` line of their code blocks parses with today's CLI
(each subcommand, option and option value, as click parses them, and each scenario name), and
docs/cli.md is what `make docs` writes. Nothing is run."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import typer
from typer.exceptions import TyperException

from mmbench.cli import app
from mmbench.cli.reference import markdown as cli_reference
from mmbench.sweep.scenarios import list_scenarios

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "cli.md"  # checked whole against the CLI, not line by line

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}
PROMPTS = ("$ ", "- run: ")  # a console prompt; a GitHub Actions step
T = TypeVar("T")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Line:
    path: Path
    number: int
    text: str

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{where}:{self.number}"


def split(path: Path) -> tuple[list[Line], list[Line]]:
    """(prose lines, code-block lines) of a markdown file."""
    prose: list[Line] = []
    code: list[Line] = []
    fenced = False
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(text):
            fenced = not fenced
            continue
        (code if fenced else prose).append(Line(path, number, text))
    return prose, code


# --- links and anchors ---


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in split(path)[0]:
        m = HEADING.match(line.text)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def paragraphs(path: Path) -> list[Line]:
    """The prose in paragraphs, each joined into one line (a link's text may wrap), numbered by its
    first line."""
    out: list[Line] = []
    last = -1
    for line in split(path)[0]:
        if not line.text.strip():
            last = -1
            continue
        if out and last == line.number - 1:
            out[-1] = Line(path, out[-1].number, out[-1].text + " " + line.text.strip())
        else:
            out.append(line)
        last = line.number
    return out


def links(path: Path) -> list[tuple[Line, str]]:
    out = []
    for paragraph in paragraphs(path):
        for m in LINK.finditer(INLINE_CODE.sub("", paragraph.text)):
            target = m.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not ours
                out.append((paragraph, target))
    return out


def link_error(path: Path, target: str) -> str | None:
    """Why a link of this page does not resolve (None: it does)."""
    file_part, _, anchor = target.partition("#")
    resolved = (path.parent / file_part).resolve() if file_part else path
    if not resolved.exists():
        return f"{target}: no such file"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{target}: no heading #{anchor} in {resolved.name}"
    return None


def tally(
    files: list[Path], found: Callable[[Path], list[tuple[Line, T]]], error: Callable[[Path, T], str | None]
) -> tuple[int, list[str]]:
    """How many things `found` finds in the files, and a line for each one `error` faults."""
    checked, broken = 0, []
    for path in files:
        for line, thing in found(path):
            checked += 1
            why = error(path, thing)
            if why is not None:
                broken.append(f"{line}: {why}")
    return checked, broken


def broken_links(files: list[Path]) -> tuple[int, list[str]]:
    return tally(files, links, link_error)


# --- command lines ---


def commands(path: Path) -> list[tuple[Line, list[str]]]:
    """Every `mmbench ...` line of the file's code blocks, as the argument list after `mmbench`
    (a line continued with a backslash joined to the next; comments and redirections cut off)."""
    out: list[tuple[Line, list[str]]] = []
    code = split(path)[1]
    i = 0
    while i < len(code):
        first, text = code[i], code[i].text
        while text.rstrip().endswith("\\") and i + 1 < len(code):
            i += 1
            text = text.rstrip()[:-1] + " " + code[i].text.strip()
        i += 1
        text = text.strip()
        for prompt in PROMPTS:
            text = text.removeprefix(prompt)
        text = re.sub(r"^\S*/(?=mmbench\b)", "", text)  # .venv/bin/mmbench is mmbench too
        if not text.startswith("mmbench ") and text != "mmbench":
            continue
        tokens = shlex.split(text, comments=True)
        cut = next((j for j, t in enumerate(tokens) if t in SHELL_OPERATORS), len(tokens))
        out.append((first, tokens[1:cut]))
    return out


def parse_error(args: list[str]) -> str | None:
    """Why today's CLI would not take these arguments (None: it would). Click parses them as it
    would before running the command: options, their values and types, the arguments."""
    root = typer.main.get_command(app)
    if not args or args[0].startswith("-"):
        return None if args in ([], ["--help"], ["-h"], ["--version"]) else f"no command in {args}"
    name, rest = args[0], args[1:]
    root_ctx = typer.Context(root, info_name="mmbench", **root.context_settings)
    command = root.get_command(root_ctx, name)  # type: ignore[attr-defined]
    if command is None:
        return f"no command {name!r}"
    try:
        ctx = command.make_context(name, list(rest), parent=root_ctx)
    except typer.Exit:  # --help
        return None
    except TyperException as exc:  # Typer's click: no such option, a bad value, a missing argument
        return exc.format_message()
    scenario = ctx.params.get("scenario") if name == "sweep" else None
    if scenario and not scenario.endswith(".toml") and scenario not in {n for n, _, _ in list_scenarios()}:
        return f"no scenario {scenario!r}"
    return None


def command_error(path: Path, args: list[str]) -> str | None:
    error = parse_error(args)
    return None if error is None else f"mmbench {shlex.join(args)}: {error}"


def broken_commands(files: list[Path]) -> tuple[int, list[str]]:
    return tally(files, commands, command_error)


# --- the tests ---


def test_every_relative_link_resolves() -> None:
    checked, broken = broken_links(pages())
    assert checked >= 20, f"only {checked} links found: is the link pattern still right?"
    assert not broken, "\n".join(broken)


def test_every_documented_command_parses() -> None:
    checked, broken = broken_commands([p for p in pages() if p != GENERATED])
    assert checked >= 25, f"only {checked} command lines found: are the code blocks still read?"
    assert not broken, "\n".join(broken)


def test_the_cli_reference_is_current() -> None:
    assert GENERATED.read_text(encoding="utf-8") == cli_reference(), (
        "docs/cli.md is not what the CLI says: run `make docs` and commit it"
    )


def test_the_checks_catch_what_drifted(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# A page\n\n## Its part: `--flag`\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n[fine](docs/other.md#its-part---flag) [gone](docs/none.md) [wrong](docs/other.md#nope)\n"
        "`[not a link](nowhere.md)` [here](#title) [web](https://example.com/x) [a text that\n"
        "wraps](docs/wrapped.md)\n\n"
        "```bash\n"
        "mmbench sweep ci --rollouts 1,2 --out runs/x    # fine\n"
        "mmbench sweep ci --no-such-flag 3\n"
        "mmbench sweep no-such-scenario\n"
        "mmbench report runs/x --format markdown >> summary.md\n"
        "mmbench plan --memory 24GiB \\\n  --modes full --bogus\n"
        "mmbench frobnicate\n"
        "$ .venv/bin/mmbench engine --port 70000\n"
        "```\n"
    )
    checked, broken = broken_links([page])
    assert checked == 5  # not the one in inline code, not the web address
    assert [b.split(": ", 1)[1] for b in broken] == [
        "docs/none.md: no such file",
        "docs/other.md#nope: no heading #nope in other.md",
        "docs/wrapped.md: no such file",
    ]
    checked, broken = broken_commands([page])
    assert checked == 7
    assert len(broken) == 5, broken
    assert "No such option: --no-such-flag" in broken[0] and "README.md:9" in broken[0]
    assert "no scenario 'no-such-scenario'" in broken[1]
    assert "--bogus" in broken[2] and "README.md:12" in broken[2]
    assert "no command 'frobnicate'" in broken[3]
    assert "70000" in broken[4]
