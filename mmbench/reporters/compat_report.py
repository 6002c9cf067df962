"""The compatibility matrix (mmbench compat): modes down, engine setups across, what each engine did;
then each failure's message and the versions. Markdown and the terminal table share the cells."""

from __future__ import annotations

from rich.table import Table

from mmbench.sweep.compat import FALLS_BACK, WORKS, Cell, CompatResult
from mmbench.units import fmt_bytes

HEADING = "Which modes survive which engine"
NOTE = (
    "Each cell: one point (K=2, N=3, 256x256, the vllm codec) on its setup's engine: mmbench's own "
    "started for the cell, a vLLM (or a fleet's vLLMs) started once per setup and reset between cells "
    "(one a point leaves dead is replaced). works: every request "
    "answered; falls back: the engine could not serve a null slot and the client resent every image "
    "in full (how often); request fails: an error the mode cannot recover from; engine dies: it no "
    "longer serves afterwards (its own last error); a replica dies: one engine of a fleet does."
)


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if cell.verdict == FALLS_BACK:
        return f"{FALLS_BACK} ({cell.record.traffic.fallbacks}/{cell.record.traffic.requests})"
    retries = cell.record.engine.router.retries
    if cell.verdict == WORKS and retries:
        return f"{WORKS} ({retries} router retries)"
    return cell.verdict


def messages(result: CompatResult) -> list[str]:
    """Every cell that is not a plain `works`: its mode, setup and the engine's words."""
    out = []
    for c in result.cells:
        if c.verdict == WORKS or not c.detail:
            continue
        out.append(f"{c.mode} on {c.setup}: {c.verdict}: {c.detail}")
    return out


def received(result: CompatResult) -> list[str]:
    """What each working cell's engine received against what the client shipped (equal, or a note)."""
    out = []
    for c in result.cells:
        shipped, got = c.record.traffic.bytes_shipped, c.record.engine.figures.bytes_received
        if c.record.engine.replicas is not None:
            continue  # a fleet: the router adds to every body, and its retries resend some
        if shipped is None or got is None or shipped == got:
            continue
        out.append(f"{c.mode} on {c.setup}: shipped {fmt_bytes(shipped)}, "
                   f"the engine received {fmt_bytes(got)}")  # fmt: skip
    return out


def rows(result: CompatResult) -> list[list[str]]:
    return [[m, *(cell_text(result.cell(m, s.name)) for s in result.setups)] for m in result.modes]


def markdown(result: CompatResult, level: str = "##") -> str:
    header = ["mode", *(s.name for s in result.setups)]
    lines = [f"{level} {HEADING}", "", "| " + " | ".join(header) + " |"]
    lines.append("| --- | " + " | ".join("---" for _ in result.setups) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(result)]
    lines += ["", NOTE, "", "Setups:", ""]
    for s in result.setups:
        lines.append(f"- `{s.name}`: {s.description}; {result.versions.get(s.name, 'not run')}")
    notes = messages(result) + received(result)
    if notes:
        lines += ["", "Messages:", ""] + [f"- {m}" for m in notes]
    return "\n".join(lines) + "\n"


def table(result: CompatResult) -> Table:
    t = Table(title=HEADING, title_justify="left")
    t.add_column("mode")
    for s in result.setups:
        t.add_column(s.name)
    for cells in rows(result):
        t.add_row(*cells)
    return t
