"""`mmbench sweep --timings`: where each point's wall time went (mmbench.measure.overhead)."""

from __future__ import annotations

from rich.table import Table

from mmbench.measure.overhead import (
    CPU_FIELDS,
    OVERHEAD_FIELDS,
    PHASE_LABELS,
    TimingSummary,
    point_overhead,
)
from mmbench.results import PointRecord


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def timings_table(records: list[PointRecord], title: str | None = None) -> Table:
    """One row per timed point: wall, rollouts, overhead and its phases in seconds; the CPU seconds
    of the client and the engine during the rollouts where the records carry them."""
    timed = [r for r in records if r.wall_s is not None]
    cpu = [k for k in CPU_FIELDS if any(getattr(r, k, None) is not None for r in timed)]
    summary = TimingSummary.of(timed)
    share = f"{summary.rollout_s / summary.wall_s:.0%}" if summary.wall_s else "-"
    caption = (
        f"{summary.points} points: {summary.wall_s:.1f} s, of which rollouts {summary.rollout_s:.1f} s "
        f"({share}); median overhead per point {_s(summary.median_overhead_s)} s. "
        "Seconds; start: how the worker and engine started (fork server or fresh interpreter)."
    )
    if len(cpu) == len(CPU_FIELDS):
        client, engine = (sum(getattr(r, k, None) or 0.0 for r in timed) for k in CPU_FIELDS)
        if client + engine > 0:
            caption += f" CPU during the rollouts: client {client / (client + engine):.0%}, engine "
            caption += f"{engine / (client + engine):.0%}."
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left", highlight=False)
    columns = ["mode", "K", "r", "start", "wall", "rollouts", "overhead"]
    columns += [PHASE_LABELS[k] for k in OVERHEAD_FIELDS] + [
        k.removesuffix("_s").replace("_", " ") for k in cpu
    ]
    for name in columns:
        table.add_column(name, justify="left" if name in ("mode", "start") else "right", no_wrap=True)
    for r in timed:
        cells = [r.mode, str(r.rollouts), str(r.repeat), r.start_method or "-", _s(r.wall_s)]
        cells += [_s(r.rollout_wall_s), _s(point_overhead(r))]
        cells += [_s(getattr(r, k)) for k in OVERHEAD_FIELDS] + [_s(getattr(r, k, None)) for k in cpu]
        table.add_row(*cells)
    if timed:
        table.add_section()
        overhead = summary.wall_s - summary.rollout_s
        table.add_row(
            "total", "", "", "", _s(summary.wall_s), _s(summary.rollout_s), _s(overhead),
            *(_s(summary.phase_s[k]) for k in OVERHEAD_FIELDS),
            *(_s(sum(getattr(r, k, None) or 0.0 for r in timed)) for k in cpu),
        )  # fmt: skip
    return table
