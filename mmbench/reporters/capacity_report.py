"""`mmbench plan --measure` as a rich table, markdown and JSON: the model's K beside the measured one."""

from __future__ import annotations

import json

from rich.table import Table

from mmbench.analysis.plan import ModePlan, Plan
from mmbench.sweep.capacity import ModeCapacity, Probe
from mmbench.units import fmt_bytes, fmt_in

COLUMNS = (
    "mode",
    "model K",
    "typical K",
    "measured K",
    "model / measured",
    "typical / measured",
    "points measured (K: system peak GiB)",
    "search s",
)


def title(plan: Plan, engine: str) -> str:
    return f"What fits in {fmt_bytes(plan.memory_bytes)} ({engine} engine): the model's K and the measured K"


def note(plan: Plan) -> str:
    return (
        "model K: the largest K whose predicted system peak plus preflight's "
        f"{plan.margin:.0%} margin fits (mmbench plan); typical K: the largest K whose typical system peak "
        "fits, no margin (half the runs peak higher). measured K: the largest K measured to fit, searched "
        "from the typical K up or down by a quarter, then bisected; a point fits when its measured system "
        "peak (the client's RSS at its peak, baseline included, plus the engine's high-water mark) is within "
        "the memory; x: it did not (over: the watchdog stopped it at the memory). model / measured: 0.75-1.00"
        " is a tight, safe plan; above 1.00 the plan would not fit."
    )


def probe_text(p: Probe) -> str:
    peak = p.system_peak_bytes
    if peak is not None:
        shown = fmt_in(peak, "GiB", 2)
    else:
        shown = "over" if p.record.status == "failed" else p.record.status
    return f"{p.rollouts}: {shown}{'' if p.fits else ' x'}"


def probe_line(p: Probe) -> str:
    """One measured point, as the search goes."""
    r = p.record
    peak = p.system_peak_bytes
    what = f"system peak {fmt_bytes(peak)}" if peak is not None else f"{r.status}: {r.cause}"
    predicted = r.prediction.system_peak_bytes
    pred = f" (predicted {fmt_bytes(predicted)})" if predicted else ""
    verdict = "fits" if p.fits else "does not fit"
    again = ", measured before" if p.reused else ""
    return f"mmbench: {r.config.mode} K={r.config.rollouts}: {what}{pred} - {verdict}{again}"


def cells(m: ModePlan, found: ModeCapacity) -> list[str]:
    measured = str(found.measured_rollouts) + (" (cap)" if found.capped else "")
    if found.error:
        measured = "failed"
    ratio = "-" if found.ratio is None or found.error else f"{found.ratio:.2f}"
    typical = "-" if found.typical_ratio is None or found.error else f"{found.typical_ratio:.2f}"
    probes = ", ".join(probe_text(p) for p in sorted(found.probes, key=lambda p: p.rollouts))
    return [m.mode, str(m.rollouts), str(m.typical_rollouts or "-"), measured, ratio, typical, probes,
            f"{found.seconds:.0f}"]  # fmt: skip


def capacity_table(plan: Plan, found: list[ModeCapacity], engine: str) -> Table:
    table = Table(title=title(plan, engine), header_style="bold", caption=note(plan), caption_justify="left",
                  highlight=False)  # fmt: skip
    for name in COLUMNS:
        table.add_column(name, justify="left" if name.startswith(("mode", "points")) else "right")
    for m, f in zip(plan.modes, found, strict=True):
        table.add_row(*cells(m, f))
    return table


def capacity_markdown(plan: Plan, found: list[ModeCapacity], engine: str) -> str:
    lines = [f"## {title(plan, engine)}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append(
        "| " + " | ".join("---" if c.startswith(("mode", "points")) else "---:" for c in COLUMNS) + " |"
    )
    lines += ["| " + " | ".join(cells(m, f)) + " |" for m, f in zip(plan.modes, found, strict=True)]
    lines += ["", note(plan), ""]
    return "\n".join(lines)


def capacity_json(plan: Plan, found: list[ModeCapacity], engine: str) -> str:
    out = {
        "memory_bytes": plan.memory_bytes, "engine": engine, "point": plan.point,
        "modes": [
            {**f.to_dict(), "plan": m.to_dict()} for m, f in zip(plan.modes, found, strict=True)
        ],
    }  # fmt: skip
    return json.dumps(out, indent=2, sort_keys=True) + "\n"
