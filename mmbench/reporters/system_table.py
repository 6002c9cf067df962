"""The whole-system tables of the trainer stage (issue 31): as rich tables for the terminal and as
markdown, from the same cells (mmbench.analysis.system).

- `system`: per point, every stage (env worker, engine, orchestrator, trainer ranks) with its peak,
  CPU, bytes sent on and processor runs per image, each measured beside the model's prediction,
  and the whole system's peak;
- `summary`: per point, the figures a team choosing a mode quotes: bytes to the ranks, the
  orchestrator's peak against the pixels it packs, a rank's peak eager against lazy, the CPU of
  each re-derivation, the pixel check, and the extrapolated replication;
- `dedup`: for each mode at the same G, what shipping each distinct image once per rank saves.
"""

from __future__ import annotations

from rich.table import Table

from mmbench.analysis.system import SystemRow
from mmbench.units import fmt_bytes

SYSTEM_COLUMNS = ("point", "stage", "peak", "pred.", "CPU s", "sends", "pred.", "proc. runs/image")
SUMMARY_COLUMNS = (
    "point", "to ranks", "pred.", "orch. peak", "pixels packed", "rank peak eager", "pred.",
    "rank peak lazy", "pred.", "re-derive CPU/image", "wrong", "wire x MP (extrap.)",
)  # fmt: skip
DEDUP_COLUMNS = (
    "mode at G", "to ranks", "with dedup", "saved", "orch. peak", "with dedup", "rank runs", "with dedup",
)  # fmt: skip
SYSTEM_NOTE = (
    "peak: each process's VmHWM above its own baseline (a stage with several processes: its largest); "
    "system: env worker + engine + orchestrator + every trainer rank. sends: the client's bytes to the "
    "engine, the orchestrator's to all ranks. proc. runs/image: processor runs per distinct image."
)


def _per_image(runs: int | None, images: int | None) -> str:
    return "-" if runs is None or not images else f"{runs / images:.2f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def system_cells(row: SystemRow) -> list[list[str]]:
    out = []
    for i, s in enumerate(row.stages):
        out.append([
            row.label if i == 0 else "", s.stage, fmt_bytes(s.peak_bytes), fmt_bytes(s.predicted_peak_bytes),
            _secs(s.cpu_s), fmt_bytes(s.bytes_out), fmt_bytes(s.predicted_bytes_out),
            _per_image(s.processor_runs, row.unique_images),
        ])  # fmt: skip
    eager, lazy = row.system_peak_bytes("eager"), row.system_peak_bytes("lazy")
    both = " / ".join(fmt_bytes(x) for x in (eager, lazy) if x is not None)
    cpu = sum(s.cpu_s or 0.0 for s in row.stages)
    out.append(["", "system (eager / lazy)", both or "-", "", _secs(cpu), "", "", ""])
    return out


def summary_cells(row: SystemRow) -> list[str]:
    t = row.record.trainer
    o, pred, ext = t.orchestrator, t.prediction, t.extrapolated
    where = row.rederive_cpu_per_image_s()
    rederive = "-" if where is None else f"{where[1] * 1000:.0f} ms ({where[0].removeprefix('trainer ')})"
    wrong = "-" if t.wrong is None else f"{t.wrong} of {t.checked}"
    return [
        row.label, fmt_bytes(o.bytes_shipped), fmt_bytes(pred.bytes_shipped), fmt_bytes(o.peak_bytes),
        fmt_bytes(o.pixel_bytes), fmt_bytes(max(t.eager.peak_bytes, default=None)),
        fmt_bytes(pred.eager_peak_bytes), fmt_bytes(max(t.lazy.peak_bytes, default=None)),
        fmt_bytes(pred.lazy_peak_bytes), rederive, wrong,
        f"{fmt_bytes(ext.bytes_shipped)} (x{ext.model_parallel})",
    ]  # fmt: skip


def dedup_pairs(rows: list[SystemRow]) -> list[tuple[SystemRow, SystemRow]]:
    """(without, with dedup) for every point measured both ways, all else equal."""

    def key(r: SystemRow) -> tuple[object, ...]:
        c = r.record.config
        return (c.mode, c.rederive_at, c.group_size, c.image_size, c.rollouts, c.turns, c.trainer)

    off = {key(r): r for r in rows if r.record.config.dedup == "off"}
    return [(off[key(r)], r) for r in rows if r.record.config.dedup == "on" and key(r) in off]


def dedup_cells(plain: SystemRow, dedup: SystemRow) -> list[str]:
    a, b = plain.record.trainer, dedup.record.trainer
    sa, sb = a.orchestrator.bytes_shipped, b.orchestrator.bytes_shipped
    saved = "-" if not sa or sb is None else f"{fmt_bytes(sa - sb)} ({100 * (sa - sb) / sa:.0f} %)"
    runs_a = sum(a.eager.processor_runs or a.lazy.processor_runs)
    runs_b = sum(b.eager.processor_runs or b.lazy.processor_runs)
    c = plain.record.config
    where = f"@{c.rederive_at}" if c.mode.startswith("ephemeral") else ""
    return [
        f"{c.mode}{where} G={c.group_size}", fmt_bytes(sa), fmt_bytes(sb), saved,
        fmt_bytes(a.orchestrator.peak_bytes), fmt_bytes(b.orchestrator.peak_bytes), str(runs_a), str(runs_b),
    ]  # fmt: skip


COMPACT_COLUMNS = (
    "point", "env worker", "engine", "orchestrator", "rank eager", "rank lazy", "system eager / lazy",
    "CPU s client / engine / orch. / ranks", "to ranks",
)  # fmt: skip


def compact_cells(row: SystemRow) -> list[str]:
    """The whole system on one line: each stage's peak (measured, and predicted in brackets)."""

    def peak(name: str) -> str:
        s = row.stage(name)
        if s is None:
            return "-"
        return f"{fmt_bytes(s.peak_bytes)} ({fmt_bytes(s.predicted_peak_bytes)})"

    def cpu(name: str) -> str:
        s = row.stage(name)
        return "-" if s is None or s.cpu_s is None else f"{s.cpu_s:.1f}"

    system = " / ".join(fmt_bytes(row.system_peak_bytes(p)) for p in ("eager", "lazy"))
    cpus = " / ".join(cpu(n) for n in ("env worker", "engine", "orchestrator", "trainer eager"))
    o = row.record.trainer.orchestrator
    return [
        row.label, peak("env worker"), peak("engine"), peak("orchestrator"), peak("trainer eager"),
        peak("trainer lazy"), system, cpus, fmt_bytes(o.bytes_shipped),
    ]  # fmt: skip


def compact_markdown(rows: list[SystemRow]) -> str:
    """One line per point (docs/trainer.md): peaks measured (predicted), CPU, bytes to the ranks."""
    return _md(COMPACT_COLUMNS, [compact_cells(r) for r in rows]) + "\n"


def _rich(title: str, columns: tuple[str, ...], rows: list[list[str]], caption: str | None = None) -> Table:
    table = Table(title=title, header_style="bold", highlight=False, caption=caption, caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i < 2 else "right")
    for cells in rows:
        table.add_row(*cells)
    return table


def system_tables(rows: list[SystemRow]) -> list[Table]:
    """The rich tables (none without a point that ran the stage)."""
    if not rows:
        return []
    cells = [c for r in rows for c in system_cells(r)]
    tables = [
        _rich("the whole system: each stage, measured and predicted", SYSTEM_COLUMNS, cells, SYSTEM_NOTE),
        _rich("after the rollout: what each mode costs", SUMMARY_COLUMNS, [summary_cells(r) for r in rows]),
    ]
    pairs = dedup_pairs(rows)
    if pairs:
        tables.append(_rich("what dedup saves", DEDUP_COLUMNS, [dedup_cells(a, b) for a, b in pairs]))
    return tables


def _md(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def system_markdown(rows: list[SystemRow]) -> str:
    """The same tables as markdown (docs/trainer.md quotes them)."""
    if not rows:
        return ""
    parts = [
        "### The whole system", "", _md(SYSTEM_COLUMNS, [c for r in rows for c in system_cells(r)]), "",
        f"_{SYSTEM_NOTE}_", "", "### What each mode costs after the rollout", "",
        _md(SUMMARY_COLUMNS, [summary_cells(r) for r in rows]),
    ]  # fmt: skip
    pairs = dedup_pairs(rows)
    if pairs:
        parts += ["", "### What dedup saves", "", _md(DEDUP_COLUMNS, [dedup_cells(a, b) for a, b in pairs])]
    return "\n".join(parts) + "\n"
