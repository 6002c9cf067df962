"""The whole-system figure of the trainer stage (issue 31): per point, each stage's peak memory,
CPU seconds and the bytes it sends on, stacked by stage, with the model's prediction marked.
Drawn on the axes mmbench.reporters.plot makes (the one module that imports matplotlib) from
mmbench.analysis.system rows.
"""

from __future__ import annotations

from typing import Any

from mmbench.analysis.system import SystemRow
from mmbench.units import GIB, MIB

# env worker, engine, orchestrator, trainer ranks: a colour each (Okabe-Ito)
STAGE_COLOURS = {
    "env worker": "#0072B2", "engine": "#56B4E9", "orchestrator": "#E69F00", "trainer": "#009E73",
}  # fmt: skip


def _parts(row: SystemRow, policy: str) -> list[tuple[str, float, float, float | None]]:
    """(stage, peak GiB of all its processes, CPU s, predicted peak GiB) for the stacked bars."""
    out = []
    for name in ("env worker", "engine", "orchestrator", f"trainer {policy}"):
        s = row.stage(name)
        if s is None:
            continue
        pred = s.predicted_peak_bytes
        if name.startswith("trainer") and pred is not None:
            pred *= row.record.config.dp_ranks  # the largest rank's, for every rank
        out.append((
            name.split()[0] if name.startswith("trainer") else name, (s.all_peaks_bytes or 0) / GIB,
            s.cpu_s or 0.0, None if pred is None else pred / GIB,
        ))  # fmt: skip
    return out


def draw_system(rows: list[SystemRow], axes: list[Any]) -> None:
    """Three panels on matplotlib `axes`: memory (every process at its peak, eager ranks where they
    ran), CPU, bytes to the ranks; a black x marks the model's figure. The legend is the caller's
    (STAGE_COLOURS)."""
    mem, cpu, wire = axes
    y = list(range(len(rows)))
    for i, row in enumerate(rows):
        policy = "eager" if row.stage("trainer eager") else "lazy"
        left_m = left_c = 0.0
        predicted = 0.0
        for stage, peak, secs, pred in _parts(row, policy):
            mem.barh(i, peak, left=left_m, color=STAGE_COLOURS[stage])
            cpu.barh(i, secs, left=left_c, color=STAGE_COLOURS[stage])
            left_m += peak
            left_c += secs
            predicted += pred or 0.0
        mem.plot([predicted], [i], marker="x", color="black", markersize=8)
        o = row.record.trainer.orchestrator
        wire.barh(i, (o.bytes_shipped or 0) / MIB, color=STAGE_COLOURS["orchestrator"])
        pred_wire = row.record.trainer.prediction.bytes_shipped
        if pred_wire is not None:
            wire.plot([pred_wire / MIB], [i], marker="x", color="black", markersize=8)
    labels = [r.label for r in rows]
    for ax, title in (
        (mem, "peak memory, every process (GiB)"),
        (cpu, "CPU seconds"),
        (wire, "orchestrator -> ranks (MiB)"),
    ):
        ax.set_title(title, fontsize=9)
        ax.set_xlim(left=0)
    mem.set_yticks(y, labels, fontsize=7)  # the panels share the axis: labelled once, on the left
    mem.invert_yaxis()
