"""The report as GitHub-flavoured markdown (pasteable into a pull request or a CI step summary), as
CSV (one row per (K, mode) cell, bytes) and as JSON. The text helpers here are shared with the
terminal tables so that both say the same thing."""

from __future__ import annotations

import csv
import io
import json

from mmbench.analysis.fits import Stat
from mmbench.analysis.ledger import LEDGER_NOTE, TOLERANCE, CacheTradeoff, Check, lines
from mmbench.analysis.report import REFERENCE_MODE, Cell, ModeSummary, Report, Row, Section
from mmbench.config import field_names
from mmbench.reporters import fidelity_report, models_report
from mmbench.units import MIB, fmt_bytes, fmt_in

EXTRAPOLATED_MARK = "†"
INCOMPLETE_MARK = "‡"
METRIC_LABELS = {"live": "retained memory (live)", "raw": "retained memory (raw)"}
METRIC_HOW = {
    "live": "retained (live) = RSS with all K trajectories alive after gc.collect(), malloc_trim(0) "
    "and a trim of every arena's top, minus the baseline after setup",
    "raw": "retained (raw) = RSS with all K trajectories alive after gc.collect(), minus the baseline "
    "after setup (freed memory the allocator keeps included)",
}
# Each record's cause says which K the line was fitted over; the CSV and JSON carry it per cell.
EXTRAPOLATED_NOTE = (
    f"{EXTRAPOLATED_MARK} extrapolated, not measured: a point preflight would not run on this machine, "
    "estimated from a least-squares line over the measured K (the cause in the CSV or JSON says which)."
)
HEAP_GAP_NOTE = (
    "RSS − heap: peak RSS above memray's heap high-water mark, memory no allocation accounts for: "
    "freed memory the allocator retains, file-backed pages (mapped libraries and files) and fragmentation."
)
SUMMARY_COLUMNS = (
    "mode", "slope MiB/rollout", "R²", "intercept MiB", "K fitted", "retained GiB",
    "peak GiB", "shipped MiB/rollout", "retained ratio", "shipped ratio",
)  # fmt: skip
HEAP_COLUMNS = ("heap peak GiB", "RSS − heap MiB")
SYSTEM_COLUMNS = (
    "mode", "K", "client live GiB", "client raw GiB", "client peak GiB", "engine above baseline GiB",
    "engine cache GiB", "system total GiB", "vs full", "shipped MiB/rollout", "client CPU s/rollout",
    "engine CPU s/rollout", "p95 latency s",
)  # fmt: skip


# --- text shared with the terminal tables ---


def fmt_gib(stat: Stat | None) -> str:
    """`median (min–max)` in GiB, the range only when there are several repeats."""
    if stat is None:
        return "-"
    text = fmt_in(stat.median, "GiB", 2)
    lo, hi = fmt_in(stat.lo, "GiB", 2), fmt_in(stat.hi, "GiB", 2)
    # "0.04 (0.04–0.04)" says nothing the median does not; the repeat count is in the last line.
    if stat.n > 1 and not lo == hi == text:
        text += f" ({lo}–{hi})"
    return text


def fmt_reduction(value: float | None) -> str:
    return "-" if value is None else f"×{value:.1f}"


def cell_text(cell: Cell | None) -> str:
    """A cell's figure (or its status), with a mark when only some repeats gave a figure."""
    if cell is None:
        return "-"
    if cell.value is None:
        return cell.status
    return fmt_gib(cell.value) + (INCOMPLETE_MARK if cell.incomplete else "")


def reduction_extrapolated(row: Row, section: Section, cell: Cell) -> bool:
    """A factor is as extrapolated as either of its two figures."""
    ref = row.cells[section.modes.index(REFERENCE_MODE)] if REFERENCE_MODE in section.modes else None
    return cell.extrapolated or (ref is not None and ref.extrapolated)


def table_header(section: Section) -> list[str]:
    cols = ["K"]
    for mode in section.modes:
        cols.append(mode)
        if mode != REFERENCE_MODE and REFERENCE_MODE in section.modes:
            cols.append("vs full")
    return cols


def row_cells(row: Row, section: Section) -> list[tuple[str, bool]]:
    """(text, extrapolated) per column after K, in table_header's order."""
    out: list[tuple[str, bool]] = []
    with_ref = REFERENCE_MODE in section.modes
    for mode, cell in zip(section.modes, row.cells, strict=True):
        out.append((cell_text(cell), cell is not None and cell.extrapolated))
        if mode != REFERENCE_MODE and with_ref:
            if cell is None:
                out.append(("-", False))
            else:
                out.append((fmt_reduction(cell.reduction), reduction_extrapolated(row, section, cell)))
    return out


def summary_cells(s: ModeSummary, with_heap: bool) -> list[str]:
    fit = s.fit
    cells = [
        s.mode,
        "-" if fit is None else fmt_in(fit.slope, "MiB", 1),
        "-" if fit is None else f"{fit.r2:.4f}",
        "-" if fit is None else fmt_in(fit.intercept, "MiB", 1),
        _k_range(s),
        fmt_gib(s.retained),
        fmt_gib(s.peak),
        "-" if s.shipped_per_rollout is None else fmt_in(s.shipped_per_rollout.median, "MiB", 1),
        _ratio(s.retained_ratio),
        _ratio(s.shipped_ratio),
    ]
    if with_heap:
        gap = s.heap_gap
        cells += [fmt_gib(s.heap_peak), "-" if gap is None else fmt_in(gap, "MiB", 1)]
    return cells


def _k_range(s: ModeSummary) -> str:
    """The fitted K from first to last (the largest K, where retained and peak are read) and the
    number of points in the fit."""
    if s.largest_k is None:
        return "-"
    if s.fit is None:
        return str(s.largest_k)
    return f"{s.fit_k_from}–{s.largest_k} ({s.fit.n})"


def _ratio(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    if stat.n > 1 and stat.hi - stat.lo >= 0.0005:
        return f"{stat.median:.3f} ({stat.lo:.3f}–{stat.hi:.3f})"
    return f"{stat.median:.3f}"


# --- the whole system: system total, ledger, engine-cache trade-off ---


def system_cells(s: ModeSummary, section: Section) -> list[str]:
    """One mode's system total at its largest K: client retained (the report's metric) + engine
    RSS above its baseline, and the factor against full's total."""
    ref = next((x for x in section.summaries if x.mode == REFERENCE_MODE), None)
    ratio = "-"
    ours, theirs = s.system_total, ref.system_total if ref is not None else None
    if s.mode != REFERENCE_MODE and ours is not None and theirs is not None and ours.median > 0:
        ratio = fmt_reduction(theirs.median / ours.median)
    return [
        s.mode,
        "-" if s.largest_k is None else str(s.largest_k),
        fmt_gib(s.retained_live),
        fmt_gib(s.retained_raw),
        fmt_gib(s.peak),
        fmt_gib(s.engine_above_baseline),
        fmt_gib(s.engine_cache),
        fmt_gib(s.system_total),
        ratio,
        "-" if s.shipped_per_rollout is None else fmt_in(s.shipped_per_rollout.median, "MiB", 1),
        fmt_seconds(s.client_cpu_per_rollout),
        fmt_seconds(s.engine_cpu_per_rollout),
        fmt_seconds(s.latency_p95, 3),
    ]


def fmt_seconds(stat: Stat | None, precision: int = 2) -> str:
    return "-" if stat is None else f"{stat.median:.{precision}f}"


def system_note(report: Report) -> str:
    return (
        "Both sides of each mode's trade at the largest K measured (median of the repeats): client "
        "retained live and raw and its peak (VmHWM) above its baseline; engine RSS above its baseline "
        "(once ready, before the worker started; a real engine: once warm, before its first point) "
        "and what its mm cache holds; system total = client "
        f"retained ({report.metric}) + engine above baseline, and vs full: full's total / this mode's; "
        "bytes shipped per rollout over every K; CPU seconds (user + system) of the client during the "
        "rollouts and of the engine while the worker ran, per rollout; p95 of the request latency the "
        "client sees (post to reply). A mode that moves memory or work into the engine shows it here."
    )


def section_has_ledger(section: Section) -> bool:
    return any(
        s.ledger is not None
        and (s.ledger.client_data is not None or s.ledger.engine_above_baseline is not None)
        for s in section.summaries
    )


def ledger_header(section: Section) -> list[str]:
    with_ledger = [s for s in section.summaries if s.ledger is not None]
    return ["MiB", *(f"{s.mode} (K={s.largest_k})" for s in with_ledger)]


def _ledger_mib(value: int | None) -> str:
    """MiB with one decimal; a part too small for that (descriptors) is not shown as nothing."""
    if value is None:
        return "-"
    if 0 < abs(value) < 0.05 * MIB:
        return "<0.1" if value > 0 else ">-0.1"
    return fmt_in(value, "MiB", 1)


def _check_text(check: Check | None) -> str:
    if check is None or check.ratio is None:
        return "-"
    return f"{check.ratio:.3f} {'✓' if check.ok else '✗'}"


def ledger_rows(section: Section) -> list[list[str]]:
    """The ledger's lines (rows) by mode (columns), at each mode's largest K; lines no mode has
    are left out; the two checks last."""
    ledgers = [s.ledger for s in section.summaries if s.ledger is not None]
    if not ledgers:
        return []
    per_mode = [lines(lg) for lg in ledgers]
    rows = []
    for i, line in enumerate(per_mode[0]):
        values = [ls[i].value for ls in per_mode]
        if all(v is None for v in values):
            continue
        rows.append([line.label, *(_ledger_mib(v) for v in values)])
    rows.append(["check: client data / live RSS", *(_check_text(lg.client_check) for lg in ledgers)])
    rows.append(
        ["check: engine cache / RSS above baseline", *(_check_text(lg.engine_check) for lg in ledgers)]
    )
    return rows


def ledger_note() -> str:
    return LEDGER_NOTE + f" ✓ within {TOLERANCE:.0%}, ✗ outside."


def tradeoff_heading(trade: CacheTradeoff) -> str:
    what = "Engine cache trade-off: the hash-only modes against engine_cache_gb"
    return f"{what} ({trade.title})" if trade.params else what


def tradeoff_header(trade: CacheTradeoff) -> list[str]:
    cols = ["engine_cache_gb"]
    for mode in trade.modes:
        cols += [f"{mode} shipped MiB", "÷ ideal", "fallbacks", "engine cache MiB"]
    return cols


def tradeoff_rows(trade: CacheTradeoff) -> list[list[str]]:
    rows = []
    for gb in trade.cache_gb:
        row = [f"{gb:g}"]
        for mode in trade.modes:
            p = trade.at(mode, gb)
            if p is None:
                row += ["-"] * 4
                continue
            shipped = p.bytes_shipped.median
            ideal = trade.ideal_bytes_shipped
            row += [
                fmt_in(shipped, "MiB", 1),
                "-" if not ideal else f"{shipped / ideal:.2f}",
                "-" if p.fallbacks is None else f"{p.fallbacks.median:g}",
                "-" if p.engine_cache_bytes is None else fmt_in(p.engine_cache_bytes.median, "MiB", 1),
            ]
        rows.append(row)
    return rows


def tradeoff_note(trade: CacheTradeoff) -> str:
    ideal, full = trade.ideal_bytes_shipped, trade.full_bytes_shipped
    return (
        f"Ideal: {fmt_in(ideal, 'MiB', 1)} MiB, each distinct image shipped once (the model's hash-only "
        f"prediction with no faults); full would ship {fmt_in(full, 'MiB', 1)} MiB (the model at the same "
        "point with mode=full). A cache smaller than the working set evicts images the client still "
        "sends as hashes: each such turn fails once and is resent in full (a fallback)."
    )


def machine_text(report: Report) -> str:
    if report.machines:  # a cluster of different machines: each section names its own
        return f"{len(report.machines)} kinds of machine"
    m = report.machine
    parts = [m.cpu_model or "unknown CPU"]
    if m.cpu_count is not None:
        parts.append(f"{m.cpu_count} CPUs")
    if m.memory_total_bytes is not None:
        parts.append(f"{fmt_bytes(m.memory_total_bytes)} RAM")
    return ", ".join(parts)


def title(report: Report) -> str:
    return f"mmbench report: {report.scenario} on {machine_text(report)} — {METRIC_LABELS[report.metric]}"


def fixed_text(report: Report) -> str:
    return "Fixed: " + ", ".join(f"{k}={v}" for k, v in report.fixed) + "."


def section_heading(report: Report, section: Section) -> str:
    what = f"{METRIC_LABELS[report.metric].capitalize()} in GiB by K concurrent rollouts"
    return f"{section.title}: {what}" if section.params else what


def footnotes(report: Report, section: Section) -> list[str]:
    """What the marks in a section's table mean, and why a cell has no figure."""
    cells = [c for row in section.rows for c in row.cells if c is not None]
    notes = []
    if any(c.extrapolated for c in cells):
        notes.append(EXTRAPOLATED_NOTE)
    if any(c.incomplete for c in cells):
        notes.append(f"{INCOMPLETE_MARK} some repeats failed or were skipped: over the others only.")
    failed = [c for c in cells if c.value is None and c.cause]
    notes += [f"K={c.rollouts} {c.mode} {c.status}: {c.cause}" for c in failed]
    return notes


def summary_note(report: Report) -> str:
    return (
        f"Slope, R², intercept: least squares of the median retained ({report.metric}) over the K "
        "fitted (from the K at which the renderer caches are full; in parentheses, how many K); retained "
        "and peak (VmHWM minus baseline) at the largest K measured; ratios: measured / the model's "
        "prediction (retained: live), median (min–max) over the measured points."
    )


def measured_line(report: Report) -> str:
    peak = "VmHWM" if report.peak_methods in ((), ("vmhwm",)) else "VmHWM (or a 1 ms RSS sampler)"
    repeats = "one run" if report.max_repeats == 1 else f"median (min–max) of {report.max_repeats} repeats"
    prov = [p for p in (f"mmbench {report.mmbench_version}" if report.mmbench_version else None,
                        f"git {_short(report.git_commit)}" if report.git_commit else None,
                        report.timestamp_utc) if p]  # fmt: skip
    return (
        "Measured in a fresh worker process per point against a fresh engine process over HTTP on "
        f"127.0.0.1: {METRIC_HOW[report.metric]}; peak = {peak} during the rollouts minus baseline; "
        f"{repeats} per point" + (f" ({', '.join(prov)})" if prov else "") + "."
    )


def _short(commit: str) -> str:
    head, dirty, _ = commit.partition("-dirty")
    return head[:12] + dirty


# --- markdown ---


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_cell(text: str, extrapolated: bool) -> str:
    return f"*{text}*{EXTRAPOLATED_MARK}" if extrapolated and text != "-" else text


def _md_section(report: Report, section: Section, level: str) -> list[str]:
    header = table_header(section)
    lines = [f"{level} {section_heading(report, section)}", "", _md_row(header)]
    lines.append("| " + " | ".join("---:" for _ in header) + " |")
    for row in section.rows:
        k = f"{row.rollouts}{EXTRAPOLATED_MARK}" if row.extrapolated else str(row.rollouts)
        lines.append(_md_row([k, *(_md_cell(t, x) for t, x in row_cells(row, section))]))
    for note in footnotes(report, section):
        lines += ["", note]
    with_heap = report.has_heap_peak
    cols = [*SUMMARY_COLUMNS, *(HEAP_COLUMNS if with_heap else ())]
    lines += ["", f"{level}# Per mode" + (f" ({section.title})" if section.params else ""), ""]
    lines += [_md_row(cols), "| " + " | ".join("---" if c == "mode" else "---:" for c in cols) + " |"]
    lines += [_md_row(summary_cells(s, with_heap)) for s in section.summaries]
    suffix = f" ({section.title})" if section.params else ""
    if any(s.system_total is not None for s in section.summaries):
        lines += ["", f"{level}# Memory, bytes and time per mode{suffix}", ""]
        lines += [_md_row(list(SYSTEM_COLUMNS)), _md_sep(list(SYSTEM_COLUMNS))]
        lines += [_md_row(system_cells(s, section)) for s in section.summaries]
    if section_has_ledger(section):
        header = ledger_header(section)
        lines += ["", f"{level}# Ledger at the largest K{suffix}", "", _md_row(header), _md_sep(header)]
        lines += [_md_row(r) for r in ledger_rows(section)]
    return [*lines, ""]


def _md_sep(header: list[str]) -> str:
    return "| " + " | ".join("---" if c in ("mode", "MiB") else "---:" for c in header) + " |"


def _md_tradeoff(trade: CacheTradeoff, level: str) -> list[str]:
    header = tradeoff_header(trade)
    lines = [f"{level} {tradeoff_heading(trade)}", "", _md_row(header), _md_sep(header)]
    lines += [_md_row(r) for r in tradeoff_rows(trade)]
    return [*lines, "", tradeoff_note(trade), ""]


def render_markdown(report: Report) -> str:
    lines = [f"## {title(report)}", ""]
    if report.description:
        lines += [report.description, ""]
    lines += [fixed_text(report), ""]
    for section in report.sections:
        lines += _md_section(report, section, "###")
    for trade in report.cache_tradeoffs:
        lines += _md_tradeoff(trade, "###")
    lines += fidelity_report.markdown(report.fidelity, "###")
    lines += models_report.markdown(report.models, "###")
    lines.append(summary_note(report))
    if report.has_heap_peak:
        lines.append("")
        lines.append(HEAP_GAP_NOTE)
    if report.has_system_total:
        lines += ["", system_note(report)]
    if any(section_has_ledger(s) for s in report.sections):
        lines += ["", ledger_note()]
    lines += ["", f"_{measured_line(report)}_", ""]
    return "\n".join(lines)


# --- machine-readable ---

CSV_COLUMNS = [
    *field_names(), "metric", "status", "n", "repeats", "median_bytes", "min_bytes", "max_bytes",
    "reduction_vs_full", "cause",
]  # fmt: skip


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    columns = [*CSV_COLUMNS, "machine"] if report.machines else CSV_COLUMNS
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for section in report.sections:
        params = dict(report.fixed) | dict(section.params)
        for row in section.rows:
            for cell in row.cells:
                if cell is None:
                    continue
                v = cell.value
                writer.writerow(
                    params | {
                        "mode": cell.mode, "rollouts": cell.rollouts, "metric": report.metric,
                        "status": cell.status, "n": 0 if v is None else v.n, "repeats": cell.repeats,
                        "median_bytes": _num(v.median if v else None),
                        "min_bytes": _num(v.lo if v else None), "max_bytes": _num(v.hi if v else None),
                        "reduction_vs_full": "" if cell.reduction is None else f"{cell.reduction:.4f}",
                        "cause": cell.cause or "",
                    }
                )  # fmt: skip
    return buf.getvalue()


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"
