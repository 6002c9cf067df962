"""`mmbench sweep --timings`: where each point's wall time went (mmbench.measure.overhead)."""

from __future__ import annotations

from operator import attrgetter

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
    timed = [r for r in records if r.timing.wall_s is not None]
    cpu = [k for k in CPU_FIELDS if any(attrgetter(k)(r) is not None for r in timed)]
    summary = TimingSummary.of(timed)
    share = f"{summary.rollout_s / summary.wall_s:.0%}" if summary.wall_s else "-"
    caption = (
        f"{summary.points} points: {summary.wall_s:.1f} s, of which rollouts {summary.rollout_s:.1f} s "
        f"({share}); median overhead per point {_s(summary.median_overhead_s)} s. "
        "Seconds."
    )
    if summary.engine_starts and summary.engine_starts < summary.points:  # engines kept between points
        caption += (
            f" Engine start-up apart: {summary.engine_starts} start(s), {summary.engine_start_s:.1f} s; "
            f"the points' median overhead without them {_s(summary.median_overhead_without_starts_s)} s "
            "(a reused engine's reset is in its point's engine start)."
        )
    if len(cpu) == len(CPU_FIELDS):
        client, engine = (sum(attrgetter(k)(r) or 0.0 for r in timed) for k in CPU_FIELDS)
        if client + engine > 0:
            caption += f" CPU during the rollouts: client {client / (client + engine):.0%}, engine "
            caption += f"{engine / (client + engine):.0%}."
    # What every point shares goes into the caption, so that the columns fit a terminal.
    methods = {r.timing.start_method or "-" for r in timed}
    per_point_start = len(methods) > 1
    repeats = any(r.repeat for r in timed)
    if not per_point_start and timed:
        caption += f" Every worker and engine started by {methods.pop()} (fork: from a fork server)."
    table = Table(title=title, header_style="bold", caption=caption, caption_justify="left", highlight=False)
    columns = ["mode", "K", *(["r"] if repeats else []), *(["start"] if per_point_start else [])]
    columns += ["wall", "rollouts", "overhead", *(PHASE_LABELS[k] for k in OVERHEAD_FIELDS)]
    columns += [CPU_FIELDS[k] for k in cpu]
    for name in columns:
        left = name in ("mode", "start")
        header = name.replace(" ", "\n")  # two-word headers on two lines: the table fits 150 columns
        width = max(map(len, header.split("\n")))
        table.add_column(header, justify="left" if left else "right", no_wrap=True, min_width=width)
    for r in timed:
        cells = [r.config.mode, str(r.config.rollouts), *([str(r.repeat)] if repeats else [])]
        cells += [r.timing.start_method or "-"] if per_point_start else []
        cells += [_s(r.timing.wall_s), _s(r.timing.rollout_wall_s), _s(point_overhead(r))]
        cells += [_s(getattr(r.timing.overhead, k)) for k in OVERHEAD_FIELDS]
        cells += [_s(attrgetter(k)(r)) for k in cpu]
        table.add_row(*cells)
    if timed:
        table.add_section()
        overhead = summary.wall_s - summary.rollout_s
        blanks = [""] * (1 + repeats + per_point_start)
        table.add_row(
            "total", *blanks, _s(summary.wall_s), _s(summary.rollout_s), _s(overhead),
            *(_s(summary.phase_s[k]) for k in OVERHEAD_FIELDS),
            *(_s(sum(attrgetter(k)(r) or 0.0 for r in timed)) for k in cpu),
        )  # fmt: skip
    return table
