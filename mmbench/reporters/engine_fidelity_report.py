"""`mmbench fidelity`: the embedded engine against vLLM, as a rich table and as markdown (same cells)."""

from __future__ import annotations

import json

from rich.table import Table

from mmbench.analysis.engine_fidelity import FIGURES, TOLERANCE, EngineRow
from mmbench.units import MIB

HEADING = "Engine fidelity: the embedded engine against vLLM on the same points"
UNITS = {"bytes received": "MiB", "retained": "MiB", "peak": "MiB"}
NOTE = (
    "Each cell: embedded / vLLM, and vLLM's as a multiple of the embedded engine's where it is more than "
    f"{TOLERANCE:.0%} away (x), or a count on one side only (!). retained and peak: the engine's RSS above "
    "its baseline once ready, at the end and at its peak (vLLM: its whole process tree). preprocessed and "
    "cache hits: the embedded engine's counters, vLLM's from its /metrics (vllm:mm_cache_queries and "
    "mm_cache_hits, which count only the media it preprocesses: processed items show 0). engine cpu: user + "
    "system seconds while the client ran; latency: per request, post to reply, as the client saw it. "
    "README, Fidelity, has each difference's measured cause."
)


def _value(figure: str, v: float | None) -> str:
    if v is None:
        return "-"
    if figure in UNITS:
        return f"{v / MIB:,.0f}"
    if figure.endswith(" s"):
        return f"{v:.2f}" if v < 10 else f"{v:.0f}"
    return f"{v:,.0f}"


def cell(row: EngineRow, figure: str) -> str:
    a, b = row.pair(figure)
    text = f"{_value(figure, a)} / {_value(figure, b)}"
    if row.differs(figure):
        ratio = row.ratio(figure)
        text += f" x{ratio:.2f}" if ratio else " !"
    return text


def header() -> list[str]:
    return ["mode", "K", *(f"{f} {UNITS[f]}" if f in UNITS else f for f in FIGURES)]


def rows(engine_rows: list[EngineRow]) -> list[list[str]]:
    out = []
    for r in engine_rows:
        params = ", ".join(f"{k}={v}" for k, v in r.params)
        mode = f"{r.mode} ({params})" if params else r.mode
        out.append([mode, str(r.rollouts), *(cell(r, f) for f in FIGURES)])
    return out


def engine_table(engine_rows: list[EngineRow]) -> Table:
    table = Table(title=HEADING, header_style="bold", caption=NOTE, caption_justify="left", highlight=False)
    for name in header():
        table.add_column(name, justify="left" if name == "mode" else "right")
    for cells in rows(engine_rows):
        table.add_row(*cells)
    return table


def engine_markdown(engine_rows: list[EngineRow]) -> str:
    names = header()
    lines = [f"## {HEADING}", "", "| " + " | ".join(names) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in names[1:]) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(engine_rows)]
    return "\n".join([*lines, "", NOTE, ""])


def engine_json(engine_rows: list[EngineRow]) -> str:
    return json.dumps([r.to_dict() for r in engine_rows], indent=2, sort_keys=True) + "\n"
