"""`mmbench fidelity`: the embedded engine against vLLM, as a rich table and as markdown (same cells)."""

from __future__ import annotations

import json

from rich.table import Table

from mmbench.analysis.engine_fidelity import FIGURES, PROCESS_KINDS, TOLERANCE, EngineRow
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


PROCESS_HEADING = "Where vLLM's figures come from: each process kind above its baseline"
PROCESS_NOTE = (
    "Each cell: retained / peak MiB above that process's RSS once ready, and its CPU seconds; the embedded "
    "engine's retained / peak beside them. The embedded engine is one process that keeps the mm cache and "
    "the bodies it reads; vLLM's API server decodes every request's items, its engine core keeps the "
    "processor cache and the running requests' features, and its worker runs the model (the vision "
    "tower's inputs and outputs)."
)


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / MIB:,.0f}"


def process_header() -> list[str]:
    return ["mode", "K", "embedded", *(kind.replace("_", " ") for kind in PROCESS_KINDS)]


def process_rows(engine_rows: list[EngineRow]) -> list[list[str]]:
    out = []
    for r in engine_rows:
        (retained, peak) = (r.pair("retained")[0], r.pair("peak")[0])
        cells = [r.mode, str(r.rollouts), f"{_mib(retained)} / {_mib(peak)}"]
        for kind in PROCESS_KINDS:
            held, high, cpu = r.process(kind)
            cells.append(f"{_mib(held)} / {_mib(high)}, {'-' if cpu is None else f'{cpu:.0f}'} s")
        out.append(cells)
    return out


def _table(title: str, caption: str, names: list[str], body: list[list[str]]) -> Table:
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left", highlight=False)
    for name in names:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for cells in body:
        table.add_row(*cells)
    return table


def process_table(engine_rows: list[EngineRow]) -> Table:
    return _table(PROCESS_HEADING, PROCESS_NOTE, process_header(), process_rows(engine_rows))


def engine_table(engine_rows: list[EngineRow]) -> Table:
    return _table(HEADING, NOTE, header(), rows(engine_rows))


def engine_markdown(engine_rows: list[EngineRow]) -> str:
    names = header()
    lines = [f"## {HEADING}", "", "| " + " | ".join(names) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in names[1:]) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(engine_rows)]
    names = process_header()
    lines += ["", NOTE, "", f"## {PROCESS_HEADING}", "", "| " + " | ".join(names) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in names[1:]) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in process_rows(engine_rows)]
    return "\n".join([*lines, "", PROCESS_NOTE, ""])


def engine_json(engine_rows: list[EngineRow]) -> str:
    return json.dumps([r.to_dict() for r in engine_rows], indent=2, sort_keys=True) + "\n"
