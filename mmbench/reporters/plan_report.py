"""`mmbench plan` as a rich table, as markdown and as JSON: the same cells in each."""

from __future__ import annotations

import json

from rich.table import Table

from mmbench.analysis.plan import PARTS, ModePlan, Plan
from mmbench.units import fmt_bytes, fmt_in

COLUMNS = (
    "mode", "largest K", "typical K", "retained GiB", "shipped/turn MiB", "need GiB",
    *(f"{part} GiB" for part in PARTS), "binding",
)  # fmt: skip
_SHOWN = (
    "image_size", "turns", "images_per_turn", "model", "pool_size", "image_cache_max", "engine_cache_gb",
    "codec", "dtype",
)  # fmt: skip


def title(plan: Plan) -> str:
    return f"What fits in {fmt_bytes(plan.memory_bytes)}: the largest K per mode (predicted, nothing run)"


def fixed_text(plan: Plan) -> str:
    shown = ", ".join(f"{k}={plan.point[k]}" for k in _SHOWN if k in plan.point)
    return f"{shown}; mean encoded source {fmt_bytes(plan.source_bytes_per_image)} per image"


def note(plan: Plan) -> str:
    return (
        "Every figure is the model's prediction at that K. need: the system peak (the client's RSS at its "
        f"peak, baseline included, plus the engine's) and preflight's {plan.margin:.0%} margin on top; K "
        "fits when the need is within the memory. The parts add up to the system peak (client peak: "
        "baseline, retained data, request bodies in flight, the allocator's slack; engine cache: its mm "
        "cache; engine peak: the rest of the engine's RSS). binding: the largest part at the first K "
        "that does not fit. typical K: the largest K whose typical system peak fits, no margin (the "
        "bounds' parts above the live data and the engine's baseline and cache at the median of what "
        "the calibration points measured): half the runs at that K peak higher."
    )


def cells(m: ModePlan) -> list[str]:
    p = m.prediction
    k = str(m.rollouts) + (" (cap)" if m.capped else "") if m.rollouts else "none"
    parts = m.parts
    return [
        m.mode, k, str(m.typical_rollouts) if m.typical_rollouts else "none",
        fmt_in(p.retained_bytes, "GiB", 2), fmt_in(m.bytes_per_turn, "MiB"),
        fmt_in(m.need_bytes, "GiB", 2),
        *(fmt_in(parts[part], "GiB", 2) for part in PARTS), m.binding or "-",
    ]  # fmt: skip


def plan_table(plan: Plan) -> Table:
    table = Table(title=title(plan), header_style="bold", caption=f"{fixed_text(plan)}\n{note(plan)}",
                  caption_justify="left", highlight=False)  # fmt: skip
    for name in COLUMNS:
        table.add_column(
            name, justify="left" if name in ("mode", "binding") else "right", no_wrap=name == "mode"
        )
    for m in plan.modes:
        table.add_row(*cells(m))
    return table


def render_markdown(plan: Plan) -> str:
    lines = [f"## {title(plan)}", "", fixed_text(plan), ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("| " + " | ".join("---" if c in ("mode", "binding") else "---:" for c in COLUMNS) + " |")
    lines += ["| " + " | ".join(cells(m)) + " |" for m in plan.modes]
    lines += ["", note(plan), ""]
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n"
