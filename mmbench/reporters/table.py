"""Rich tables for the terminal: the sweep summary and one point's detail."""

from __future__ import annotations

from rich.table import Table

from mmbench.analysis.fits import PointGroup, Stat, group, mode_fits
from mmbench.analysis.ledger import ledger, lines
from mmbench.results import PointRecord
from mmbench.units import fmt_bytes, fmt_in


def fmt_stat(stat: Stat | None, show_range: bool = True, unit: str = "MiB") -> str:
    """Median of the repeats in `unit`, with the min-max range when there are several."""
    if stat is None:
        return "-"
    text = fmt_in(stat.median, unit)
    if show_range and stat.n > 1:
        text += f" ({fmt_in(stat.lo, unit)}–{fmt_in(stat.hi, unit)})"
    return text


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ratio(g: PointGroup, metric: str) -> str:
    s = g.stat(metric)
    return "-" if s is None else fmt_ratio(s.median)


def _count(g: PointGroup, metric: str) -> str:
    s = g.stat(metric)
    return "-" if s is None else f"{int(s.median)}"


def _secs(g: PointGroup, metric: str) -> str:
    s = g.stat(metric)
    return "-" if s is None else f"{s.median:.1f}"


def sweep_table(records: list[PointRecord], title: str | None = None) -> Table:
    """One row per point (repeats folded into median and range): measured beside predicted."""
    table = Table(
        title=title, header_style="bold", caption=SWEEP_CAPTION, caption_justify="left", highlight=False
    )
    for name in (
        "mode",
        "K",
        "live",
        "pred.",
        "ratio",
        "raw",
        "peak",
        "shipped",
        "ship/pred",
        "fb/wrong",
        "cpu c/e",
        "s",
    ):
        table.add_column(name, justify="left" if name == "mode" else "right", no_wrap=True)
    groups = group(records)
    by_machine = any(g.machine for g in groups)  # points measured on machines of different kinds
    if by_machine:
        table.add_column("machine")
    notes: list[str] = []
    for g in groups:
        c = g.config
        wall = g.stat("wall_s")
        cells = [c.mode, str(c.rollouts)]
        if not g.ok_records:
            # Not measured: the status in place of the figures, the cause as a numbered note below.
            notes.append(f"[{len(notes) + 1}] {c.mode} K={c.rollouts}: {(g.causes or ['-'])[0]}")
            first = g.records[0]
            live = fmt_in(first.retained_live_bytes) if g.status == "extrapolated" else "-"
            cells += [f"{live} ({g.status} [{len(notes)}])", fmt_in(first.predicted_retained_bytes)]
            cells += [""] * 8
        else:
            cells += [
                fmt_stat(g.stat("retained_live_bytes")),
                fmt_in(g.first("predicted_retained_bytes")),  # type: ignore[arg-type]
                _ratio(g, "retained_ratio"),
                fmt_stat(g.stat("retained_bytes")),
                fmt_stat(g.stat("peak_bytes"), show_range=False),
                fmt_stat(g.stat("bytes_shipped"), show_range=False),
                _ratio(g, "shipped_ratio"),
                f"{_count(g, 'fallbacks')}/{_count(g, 'wrong_results')}",
                f"{_secs(g, 'client_cpu_s')}/{_secs(g, 'engine_cpu_s')}",
                "-" if wall is None else f"{wall.median:.0f}",
            ]
        table.add_row(*cells, *([g.machine or "unknown"] if by_machine else []))
    if notes:
        table.caption = "\n".join([SWEEP_CAPTION, *notes])
    return table


SWEEP_CAPTION = (
    "live: retained RSS after malloc_trim minus baseline (what the live data occupies); pred.: the model; "
    "raw: retained RSS minus baseline, allocator retention included; peak: VmHWM minus baseline; "
    "fb/wrong: fallbacks / wrong results; cpu c/e: CPU seconds of the client during the rollouts / of "
    "the engine; s: wall seconds"
)


def fits_table(records: list[PointRecord]) -> Table | None:
    """Per mode: the per-rollout slope of retained (live) over K, beside its physical floor."""
    fits = mode_fits(records)
    if not fits:
        return None
    table = Table(title="retained (live) per rollout, least squares over K", header_style="bold")
    for name in (
        "mode", "K used", "slope MiB/rollout", "R²", "intercept MiB", "floor MiB/rollout",
        "model MiB/rollout", "slope/expected",
    ):  # fmt: skip
        table.add_column(name, justify="left" if name == "mode" else "right")
    for f in fits:
        ratio, against = f.vs_expected, f.expected[1]
        versus = (
            f"{ratio:.3f} ({against})" if ratio is not None else "-" if f.resolvable else "- (below noise)"
        )
        table.add_row(
            f.label, f">= {f.k_from} ({f.fit.n} pts)", fmt_in(f.fit.slope, precision=2), f"{f.fit.r2:.4f}",
            fmt_in(f.fit.intercept), fmt_in(f.floor_per_rollout, precision=2),
            "-" if f.model_slope is None else fmt_in(f.model_slope, precision=2),
            versus,
        )  # fmt: skip
    table.caption = FITS_CAPTION
    table.caption_justify = "left"
    return table


FITS_CAPTION = (
    "floor: what one rollout's trajectory holds (pixels, sources or media URLs, descriptors, tokens; the "
    "ledger at the largest K); model: the model's slope over the same K. slope/expected compares the "
    "slope with the floor once the renderer caches are full, and with the model's slope while a cache "
    "still fills (each more rollout then also adds to the cache, which the floor leaves out); no ratio "
    "where the growth over the K fitted stays below the 2 MiB noise floor of RSS readings."
)


PHASES = (
    ("baseline (after setup)", "rss_baseline_bytes"),
    ("peak during rollouts", "rss_peak_bytes"),
    ("retained, K trajectories alive", "rss_retained_bytes"),
    ("retained after malloc_trim", "rss_retained_trimmed_bytes"),
    ("released (trajectories dropped)", "rss_released_bytes"),
    ("released after malloc_trim", "rss_released_trimmed_bytes"),
    ("USS at retained time", "uss_retained_bytes"),
)
LEDGER_NOTES = {"part": "", "sum": "accounting", "reading": "RSS", "total": ""}


def point_table(r: PointRecord) -> Table:
    """One point: RSS by phase, the derived figures beside the prediction, the ledger, traffic."""
    title = f"{r.mode}  K={r.rollouts}  N={r.turns}  {r.image_size}px  {r.model}  [{r.status}]"
    table = Table(title=title, header_style="bold", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note")

    def row(label: str, value: object, note: str = "") -> None:
        text = (
            fmt_bytes(value) if isinstance(value, int | float) else str(value if value is not None else "-")
        )
        table.add_row(label, text, note)

    for label, key in PHASES:
        row(label, getattr(r, key), "RSS" if key.startswith("rss") else "")
    table.add_section()
    row("retained (raw) = retained - baseline", r.retained_bytes)
    row(
        "retained (live) = trimmed - baseline",
        r.retained_live_bytes,
        f"predicted {fmt_bytes(r.predicted_retained_bytes)}, ratio {fmt_ratio(r.retained_ratio)}",
    )
    row("allocator retention = raw - live", r.allocator_retention_bytes)
    row(
        "peak = peak - baseline",
        r.peak_bytes,
        f"method {r.peak_method}; predicted {fmt_bytes(r.predicted_peak_bytes)}",
    )
    table.add_section()
    # Where the memory lives, client and engine: the ledger, its checks beside what they compare.
    for line in lines(ledger(r)):
        row(line.label, line.value, line.check.text() if line.check else LEDGER_NOTES[line.kind])
    if r.timeline_file:
        table.add_row("timeline (RSS over time, mmbench plot)", "", r.timeline_file)
    table.add_section()
    row(
        "bytes shipped",
        r.bytes_shipped,
        f"predicted {fmt_bytes(r.predicted_bytes_shipped)}, ratio {fmt_ratio(r.shipped_ratio)}; "
        f"engine received {fmt_bytes(r.engine_bytes_received)}",
    )
    table.add_row(
        "requests / full items / null items", f"{r.requests} / {r.full_items_sent} / {r.null_items_sent}", ""
    )
    table.add_row(
        "fallbacks / wrong results / failed rollouts",
        f"{r.fallbacks} / {'-' if r.wrong_results is None else r.wrong_results} / {r.failed_rollouts}",
        "",
    )
    table.add_row(
        "renderer cache hits / misses / re-derived",
        f"{r.renderer_cache_hits} / {r.renderer_cache_misses} / {r.rederived}",
        "",
    )
    table.add_row(
        "engine preprocessing calls",
        str(r.engine_preprocess_calls if r.engine_preprocess_calls is not None else "-"),
        f"predicted {r.predicted_engine_preprocess_calls}; media items sent {r.media_items_sent}",
    )
    row("engine RSS at end", r.engine_rss_bytes)
    items = "-" if r.engine_cache_items is None else r.engine_cache_items
    hits = "-" if r.engine_cache_hits is None else r.engine_cache_hits
    row("engine cache", r.engine_cache_bytes, f"{items} items, {hits} hits")
    if r.engine_version is not None:  # a real engine: what served, and what only it counts
        table.add_row("engine", r.engine or "-", r.engine_version)
        for label, value in (
            ("engine API server peak RSS", r.engine_api_peak_rss_bytes),
            ("engine core peak RSS", r.engine_core_peak_rss_bytes),
            ("engine worker peak RSS", r.engine_worker_peak_rss_bytes),
        ):
            row(label, value, "VmHWM during the point")
        queries = "-" if r.engine_mm_cache_queries is None else r.engine_mm_cache_queries
        table.add_row("engine mm cache queries / hits", f"{queries} / {hits}", "vLLM's /metrics")
        table.add_row("engine answers by status", r.engine_status_counts or "-", "")
    if r.fallback_error:
        table.add_row("first fallback's cause", r.fallback_error, "")
    if r.engine_failure:
        table.add_row("engine failure", r.engine_failure, "")
    if r.asset_disk_bytes is not None:
        row("asset files on disk (raw-file)", r.asset_disk_bytes)
    if r.memray_peak_bytes is not None:
        row("memray heap high-water mark", r.memray_peak_bytes)
    table.add_section()
    k = r.rollouts
    table.add_row("rollout wall time", _seconds(r.rollout_wall_s), "")
    table.add_row("client CPU (user + system)", _seconds(r.client_cpu_s), _per_rollout(r.client_cpu_s, k))
    table.add_row("engine CPU (user + system)", _seconds(r.engine_cpu_s), _per_rollout(r.engine_cpu_s, k))
    latencies = (r.request_latency_p50_s, r.request_latency_p95_s, r.request_latency_max_s)
    table.add_row(
        "request latency p50 / p95 / max",
        " / ".join("-" if x is None else f"{x * 1000:.0f}" for x in latencies) + " ms",
        "post to reply, as the client sees it",
    )
    table.add_row("wall time", _seconds(r.wall_s), "the whole point: processes, set-up, readings")
    if r.cause:
        table.add_row("cause", r.cause, "")
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _per_rollout(value: float | None, k: int) -> str:
    return "" if value is None else f"{value / k:.3f} s per rollout"
