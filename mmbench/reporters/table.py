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
        wall = g.stat("timing.wall_s")
        cells = [c.mode, str(c.rollouts)]
        if not g.ok_records:
            # Not measured: the status in place of the figures, the cause as a numbered note below.
            notes.append(f"[{len(notes) + 1}] {c.mode} K={c.rollouts}: {(g.causes or ['-'])[0]}")
            first = g.records[0]
            live = fmt_in(first.client.retained_live_bytes) if g.status == "extrapolated" else "-"
            cells += [f"{live} ({g.status} [{len(notes)}])", fmt_in(first.prediction.retained_bytes)]
            cells += [""] * 8
        else:
            cells += [
                fmt_stat(g.stat("client.retained_live_bytes")),
                fmt_in(g.first("prediction.retained_bytes")),  # type: ignore[arg-type]
                _ratio(g, "prediction.retained_ratio"),
                fmt_stat(g.stat("client.retained_bytes")),
                fmt_stat(g.stat("client.peak_bytes"), show_range=False),
                fmt_stat(g.stat("traffic.bytes_shipped"), show_range=False),
                _ratio(g, "prediction.shipped_ratio"),
                f"{_count(g, 'traffic.fallbacks')}/{_count(g, 'traffic.wrong_results')}",
                f"{_secs(g, 'client.cpu_s')}/{_secs(g, 'engine.figures.cpu_s')}",
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


# The client's readings by phase: label, the RssReadings field, its note.
PHASES = (
    ("baseline (after setup)", "baseline_bytes", "RSS"),
    ("peak during rollouts", "peak_bytes", "RSS"),
    ("retained, K trajectories alive", "retained_bytes", "RSS"),
    ("retained after malloc_trim", "retained_trimmed_bytes", "RSS"),
    ("released (trajectories dropped)", "released_bytes", "RSS"),
    ("released after malloc_trim", "released_trimmed_bytes", "RSS"),
    ("USS at retained time", "uss_retained_bytes", ""),
)
# A real vLLM's process kinds, as the point table names them.
PROCESS_PEAKS = (
    ("engine API server peak RSS", "api_server"),
    ("engine core peak RSS", "engine_core"),
    ("engine worker peak RSS", "worker"),
)
LEDGER_NOTES = {"part": "", "sum": "accounting", "reading": "RSS", "total": ""}


def point_table(r: PointRecord) -> Table:
    """One point: RSS by phase, the derived figures beside the prediction, the ledger, traffic."""
    c, t, e, p, time = r.client, r.traffic, r.engine.figures, r.prediction, r.timing
    cfg = r.config
    title = f"{cfg.mode}  K={cfg.rollouts}  N={cfg.turns}  {cfg.image_size}px  {cfg.model}  [{r.status}]"
    table = Table(title=title, header_style="bold", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("note")

    def row(label: str, value: object, note: str = "") -> None:
        text = (
            fmt_bytes(value) if isinstance(value, int | float) else str(value if value is not None else "-")
        )
        table.add_row(label, text, note)

    for label, key, note in PHASES:
        row(label, getattr(c.rss, key), note)
    table.add_section()
    row("retained (raw) = retained - baseline", c.retained_bytes)
    row(
        "retained (live) = trimmed - baseline",
        c.retained_live_bytes,
        f"predicted {fmt_bytes(p.retained_bytes)}, ratio {fmt_ratio(p.retained_ratio)}",
    )
    row("allocator retention = raw - live", c.allocator_retention_bytes)
    row(
        "peak = peak - baseline",
        c.peak_bytes,
        f"method {c.rss.peak_method}; predicted {fmt_bytes(p.peak_bytes)}",
    )
    table.add_section()
    # Where the memory lives, client and engine: the ledger, its checks beside what they compare.
    for line in lines(ledger(r)):
        row(line.label, line.value, line.check.text() if line.check else LEDGER_NOTES[line.kind])
    if time.timeline_file:
        table.add_row("timeline (RSS over time, mmbench plot)", "", time.timeline_file)
    table.add_section()
    row(
        "bytes shipped",
        t.bytes_shipped,
        f"predicted {fmt_bytes(p.bytes_shipped)}, ratio {fmt_ratio(p.shipped_ratio)}; "
        f"engine received {fmt_bytes(e.bytes_received)}",
    )
    table.add_row(
        "requests / full items / null items", f"{t.requests} / {t.full_items_sent} / {t.null_items_sent}", ""
    )
    table.add_row(
        "fallbacks / wrong results / failed rollouts",
        f"{t.fallbacks} / {'-' if t.wrong_results is None else t.wrong_results} / {t.failed_rollouts}",
        "",
    )
    table.add_row(
        "renderer cache hits / misses / re-derived",
        f"{c.rendering.cache_hits} / {c.rendering.cache_misses} / {c.rendering.rederived}",
        "",
    )
    table.add_row(
        "engine preprocessing calls",
        str(e.preprocess_calls if e.preprocess_calls is not None else "-"),
        f"predicted {p.engine_preprocess_calls}; media items sent {t.media_items_sent}",
    )
    row("engine RSS at end", e.rss_bytes)
    items = "-" if e.cache_items is None else e.cache_items
    hits = "-" if e.cache_hits is None else e.cache_hits
    row("engine cache", e.cache_bytes, f"{items} items, {hits} hits")
    if r.engine.version is not None:  # a real engine: what served, and what only it counts
        table.add_row("engine", r.engine.url or r.engine.kind or "-", r.engine.version)
        processes = e.processes or {}
        for label, kind in PROCESS_PEAKS:
            row(
                label, processes[kind].peak_rss_bytes if kind in processes else None, "VmHWM during the point"
            )
        queries = "-" if e.mm_cache_queries is None else e.mm_cache_queries
        table.add_row("engine mm cache queries / hits", f"{queries} / {hits}", "vLLM's /metrics")
        table.add_row("engine answers by status", e.status_counts or "-", "")
    if r.engine.replicas is not None or r.engine.fleet.note is not None:
        table.add_section()
        for label, value, note in fleet_rows(r):
            table.add_row(label, value, note)
        table.add_section()
    if t.fallback_error:
        table.add_row("first fallback's cause", t.fallback_error, "")
    if r.engine.failure:
        table.add_row("engine failure", r.engine.failure, "")
    if t.asset_disk_bytes is not None:
        row("asset files on disk (raw-file)", t.asset_disk_bytes)
    if c.memray_peak_bytes is not None:
        row("memray heap high-water mark", c.memray_peak_bytes)
    table.add_section()
    k = cfg.rollouts
    table.add_row("rollout wall time", _seconds(time.rollout_wall_s), "")
    table.add_row("client CPU (user + system)", _seconds(c.cpu_s), _per_rollout(c.cpu_s, k))
    table.add_row("engine CPU (user + system)", _seconds(e.cpu_s), _per_rollout(e.cpu_s, k))
    latencies = (t.latency_p50_s, t.latency_p95_s, t.latency_max_s)
    table.add_row(
        "request latency p50 / p95 / max",
        " / ".join("-" if x is None else f"{x * 1000:.0f}" for x in latencies) + " ms",
        "post to reply, as the client sees it",
    )
    table.add_row("wall time", _seconds(time.wall_s), "the whole point: processes, set-up, readings")
    if r.cause:
        table.add_row("cause", r.cause, "")
    return table


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def fleet_rows(r: PointRecord) -> list[tuple[str, str, str]]:
    """A fleet's rows of the point table: the router, each replica, the fleet, measured beside the
    model; or, for an engine URL that is really several engines, what its counts cover."""
    e, p, t, cfg = r.engine, r.prediction, r.traffic, r.config
    fleet, router = e.fleet, e.router
    if e.replicas is None:
        return [("engine's counts / client's bytes", f"{fleet.covered_share:.0%}", fleet.note or "")]
    rows = [(
        "fleet", f"{cfg.replicas} x {e.kind} behind {router.version}",
        f"policy {cfg.router_policy}, session header {cfg.session_header}, "
        f"router retries {cfg.router_retries}",
    )]  # fmt: skip
    for i, rep in enumerate(e.replicas, 1):
        state = f"DIED: {rep.failure}" if rep.died else ""
        rows.append((
            f"replica {i}: requests / bytes received",
            f"{_n(rep.requests)} / {fmt_bytes(rep.bytes_received)}",
            f"{rep.status_counts or '-'}; cache hits {_n(rep.cache_hits)}, misses {_n(rep.cache_misses)}, "
            f"{fmt_bytes(rep.cache_bytes)}; retained {fmt_bytes(rep.retained_bytes)}, peak "
            f"{fmt_bytes(rep.peak_rss_bytes)} {state}".rstrip(),
        ))  # fmt: skip
    rows += [
        ("replica misses (null slots a replica lacked)", _n(fleet.misses),
         f"predicted {_n(p.fleet_misses)}; preprocessing calls {_n(e.figures.preprocess_calls)}, "
         f"predicted {_n(p.engine_preprocess_calls)}"),
        ("client fallbacks / resent bytes", f"{_n(t.fallbacks)} / {fmt_bytes(t.extra_bytes_shipped)}",
         f"predicted {_n(p.fallbacks)} fallbacks; failed rollouts {_n(t.failed_rollouts)}, predicted "
         f"{_n(p.failed_rollouts)}"),
        ("router retries / retried bytes", f"{_n(router.retries)} / {fmt_bytes(router.retried_bytes)}",
         f"predicted {_n(p.router_retries)}; retried bytes: replicas' received - client's shipped"),
        ("fleet cache / unique items (duplication)", f"{fmt_bytes(fleet.cache_bytes)}",
         f"unique {fmt_bytes(fleet.unique_cache_bytes)}, x{_n(fleet.duplication)}"),
        ("balance (max/min requests per replica)", _n(fleet.balance), f"{_n(fleet.died)} replica(s) died"),
        ("router RSS at end / peak", f"{fmt_bytes(router.rss_bytes)} / {fmt_bytes(router.peak_rss_bytes)}",
         router.flags or ""),
    ]  # fmt: skip
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _per_rollout(value: float | None, k: int) -> str:
    return "" if value is None else f"{value / k:.3f} s per rollout"
