"""`mmbench profile`'s tables: where the worker's heap goes at the high-water mark and at retained
time, by category and by site, as rich tables for the terminal and as markdown (sites.md). The
text of every cell comes from the helpers here, so that both say the same thing."""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from mmbench.measure.profile import ATTRIBUTION, CATEGORIES, ProfileResult, Site, Snapshot, category_of
from mmbench.units import fmt_bytes

SNAPSHOT_TITLES = {
    "high_water_mark": "at the heap high-water mark",
    "retained": "at retained time (tracking stopped with the K trajectories alive)",
}
CATEGORY_HEADER = ("category", "high-water mark", "share", "retained", "share")
SITE_HEADER = ("#", "function", "file:line", "category", "bytes", "share", "allocations")
RIGHT = {"high-water mark", "retained", "share", "bytes", "allocations", "#"}


def fmt_share(share: float) -> str:
    return f"{100 * share:.1f} %"


def title(result: ProfileResult) -> str:
    c = result.record.config
    w, h = c.image_wh
    return f"mmbench profile: {c.mode}, K={c.rollouts}, N={c.turns}, {w}x{h}"


def point_line(result: ProfileResult) -> str:
    r = result.record
    c, held = r.config, r.client.accounting
    parts = [
        f"{c.images_per_turn} image(s)/turn, {c.model}, {c.image_format} {c.content}, codec {c.codec}, "
        f"dtype {c.dtype}",
        f"heap high-water mark (memray) {fmt_bytes(r.client.memray_peak_bytes)}",
        f"peak RSS over baseline {fmt_bytes(r.client.peak_bytes)}",
        f"retained (live) {fmt_bytes(r.client.retained_live_bytes)}",
        f"ledger: trajectory pixels {fmt_bytes(held.stored_pixel_bytes)}, image-cache-only pixels "
        f"{fmt_bytes(held.renderer_cache_only_bytes)}, sources {fmt_bytes(held.source_bytes)}",
    ]
    return "; ".join(parts)


def files_line(result: ProfileResult) -> str:
    names = [result.capture.name, *(p.name for p in result.flamegraphs.values()), "sites.md", "sites.json"]
    traces = "Python and native frames" if result.native else "Python frames"
    return f"in {result.out_dir}: {', '.join(names)} ({traces})"


def category_rows(result: ProfileResult) -> list[list[str]]:
    high, retained = result.snapshots
    rows = [
        [label, *_pair(high, key), *_pair(retained, key)]
        for key, label in CATEGORIES.items()
        if high.category(key).bytes or retained.category(key).bytes
    ]
    rows.append(["total", fmt_bytes(high.total_bytes), "100 %", fmt_bytes(retained.total_bytes), "100 %"])
    return rows


def _pair(snapshot: Snapshot, key: str) -> list[str]:
    c = snapshot.category(key)
    return [fmt_bytes(c.bytes), fmt_share(c.share)]


def site_category(site: Site) -> str:
    """The site's category; a renderer output site says so and how its bytes were split."""
    if not site.split and site.category == category_of(site.path, site.function):
        return CATEGORIES[site.category]
    if not site.split:
        return f"{CATEGORIES[site.category]} (renderer output)"
    parts = " + ".join(f"{CATEGORIES[k]} {fmt_share(b / site.bytes)}" for k, b in site.split)
    return f"{parts} (renderer output)"


def site_rows(snapshot: Snapshot) -> list[list[str]]:
    return [
        [
            str(i),
            s.function,
            f"{s.path}:{s.line}",
            site_category(s),
            fmt_bytes(s.bytes),
            fmt_share(s.share),
            str(s.allocations),
        ]
        for i, s in enumerate(snapshot.sites, 1)
    ]


def sites_heading(snapshot: Snapshot) -> str:
    return (
        f"Top {len(snapshot.sites)} of {snapshot.site_count} mmbench sites "
        f"{SNAPSHOT_TITLES[snapshot.name]}: {fmt_bytes(snapshot.total_bytes)} in "
        f"{snapshot.allocations} allocations"
    )


def frameless_line(snapshot: Snapshot) -> str:
    """What the site list leaves out: records with no mmbench frame on their stack."""
    n, engine = snapshot.frameless_bytes, snapshot.frameless_engine_bytes
    share = fmt_share(n / snapshot.total_bytes) if snapshot.total_bytes else "-"
    text = f"no mmbench frame on the stack (not listed above): {fmt_bytes(n)} ({share})"
    if engine:
        text += f"; {fmt_bytes(engine)} of it under httpx/httpcore/h11/anyio, in engine client buffers"
    return text


def _table(header: tuple[str, ...], rows: list[list[str]], heading: str, caption: str | None) -> Table:
    table = Table(title=heading, title_justify="left", header_style="bold", highlight=False)
    for name in header:
        table.add_column(name, justify="right" if name in RIGHT else "left", no_wrap=name != "category")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: function names like <listcomp> stay as is
    if caption:
        table.caption = caption
        table.caption_justify = "left"
    return table


def profile_tables(result: ProfileResult) -> list[RenderableType]:
    head = Table.grid()
    head.add_column()
    for line in (title(result), point_line(result), files_line(result)):
        head.add_row(Text(line, style="bold" if line == title(result) else ""))
    out: list[RenderableType] = [
        head,
        _table(CATEGORY_HEADER, category_rows(result), "Heap by category", ATTRIBUTION),
    ]
    for snap in result.snapshots:
        out.append(_table(SITE_HEADER, site_rows(snap), sites_heading(snap), frameless_line(snap)))
    if result.notes:
        out.append(Text("\n".join(f"note: {n}" for n in result.notes)))
    return out


def _md_table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if name in RIGHT else "---" for name in header]
    return [line(header), "| " + " | ".join(align) + " |", *(line(r) for r in rows)]


def profile_markdown(result: ProfileResult) -> str:
    lines = [
        f"# {title(result)}",
        "",
        point_line(result),
        "",
        files_line(result),
        "",
        "## Heap by category",
        "",
    ]
    lines += _md_table(CATEGORY_HEADER, category_rows(result))
    lines += ["", ATTRIBUTION]
    for snap in result.snapshots:
        lines += ["", f"## {sites_heading(snap)}", ""]
        lines += _md_table(SITE_HEADER, site_rows(snap))
        lines += ["", frameless_line(snap)]
    if result.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in result.notes)]
    return "\n".join(lines) + "\n"
