"""`mmbench compare` output: a rich table for the terminal, GitHub markdown for a PR comment."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from mmbench.analysis.compare import METRIC_LABELS, Comparison, Row, Side
from mmbench.units import fmt_in

COLUMNS = ("point", "base MiB", "head MiB", "change", "p", "significant", "verdict")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(c: Comparison) -> str:
    """The one line a reader needs: how much was compared and how much regressed."""
    what = "slope" if c.metric == "slope" else "point"
    text = (
        f"{_plural(len(c.gating_rows), what)} compared, "
        f"{_plural(len(c.regressions), 'regression')} over {c.threshold:g} % "
        f"({METRIC_LABELS[c.metric]})"
    )
    if c.not_compared:
        text += f", {len(c.not_compared)} not compared"
    if c.no_repeats:
        text += "; no repeats: every change counts"
    return text


def _side(s: Side, precision: int) -> str:
    text = fmt_in(s.value, precision=precision)
    if s.n > 1:
        text += f" ({fmt_in(s.lo, precision=precision)}–{fmt_in(s.hi, precision=precision)}, n={s.n})"
    return text


def _change(r: Row) -> str:
    return f"{r.change_pct:+.0f} %" if math.isinf(r.change_pct) else f"{r.change_pct:+.1f} %"


def _significant(r: Row) -> str:
    if not r.repeated:
        return "n/a"  # a single repeat cannot separate noise from change; the summary says so
    return "yes" if r.significant else "no"


def _verdict(r: Row) -> str:
    if not r.gating:
        return "info"
    return "❌" if r.regression else "✅"


def _cells(r: Row) -> list[str]:
    label = f"{r.label} (per rollout)" if r.kind == "slope" else r.label
    precision = 2 if r.kind == "slope" else 1
    p = "-" if r.p_value is None else f"{r.p_value:.3f}"
    return [
        label,
        _side(r.base, precision),
        _side(r.head, precision),
        _change(r),
        p,
        _significant(r),
        _verdict(r),
    ]


def _ordered(c: Comparison) -> list[Row]:
    """Gating rows first, so that the rows deciding the exit code lead the table."""
    return sorted(c.rows, key=lambda r: not r.gating)


def compare_table(c: Comparison) -> Table:
    table = Table(
        title=summary(c),
        title_justify="left",
        header_style="bold",
        caption=_caption(c),
        caption_justify="left",
    )
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "point" else "right", no_wrap=True)
    for r in _ordered(c):
        cells = [escape(cell) for cell in _cells(r)]
        if r.regression:
            cells = [f"[red]{cell}[/red]" for cell in cells]
        table.add_row(*cells)
    return table


def _caption(c: Comparison) -> str:
    lines = [
        "significant: min-max ranges apart or Mann-Whitney p < 0.05 (needs n >= 2 on both sides); "
        "info rows never fail"
    ]
    lines += [escape(f"not compared: {n.label} ({n.reason})") for n in c.not_compared]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def compare_markdown(c: Comparison) -> str:
    """GitHub-flavoured markdown to paste into a PR: the summary line, the table, what was left out."""
    align = ["---"] + ["---:"] * 4 + [":---:"] * 2
    lines = [
        f"**mmbench compare**: {summary(c)}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_md_escape(cell) for cell in _cells(r)) + " |" for r in _ordered(c)]
    lines += [
        "",
        "Significant: min-max ranges apart or Mann-Whitney p < 0.05 (needs n >= 2 on both sides); "
        "info rows never fail.",
    ]
    if c.not_compared:
        lines += ["", "Not compared:", ""]
        lines += [f"- {_md_escape(n.label)}: {_md_escape(n.reason)}" for n in c.not_compared]
    return "\n".join(lines) + "\n"
