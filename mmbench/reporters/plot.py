"""Figures of one results file, for a PR comment or a report: retained memory against K, bytes
shipped per rollout and per turn, peak beside retained. The only module that imports matplotlib.

`plot_data` computes every plotted series from the results (pure, tested on its own); the `_draw_*`
functions only draw them. A results file may hold several values of parameters other than mode and
K (image_size, turns, ...): the figures draw the first such combination that has data, in the order
the points appear, and the subtitle names it and says how many were left out. Figures (b)-(d) show
measured points only; figure (a) also shows extrapolated ones, hollow.

Two more where the results have the data: the memory timeline (both processes' RSS over the run,
one panel per mode at its largest K, from the timeline files saved beside the results) and the
engine-cache trade-off (the hash-only modes against engine_cache_gb, from every combination).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.patches

# Files only: no display, and no GUI toolkit pulled in on a headless CI runner.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

from mmbench.analysis.fits import Stat, group, mode_fits
from mmbench.analysis.ledger import CacheTradeoff, cache_tradeoffs, ledger
from mmbench.analysis.system import SystemRow, system_rows
from mmbench.config import field_names
from mmbench.errors import MmbenchError
from mmbench.measure.machines import machines, machines_differ, split_key
from mmbench.measure.timeline import load_timeline
from mmbench.reporters.system_plot import STAGE_COLOURS, draw_system
from mmbench.results import PointRecord, ResultsFile
from mmbench.transports.registry import MODES
from mmbench.units import GIB, MIB
from mmbench.world.geometry import parse_image_size

FORMATS = ("png", "svg")
FIGSIZE = (9.0, 5.5)
DPI = 100  # 900 x 550 px: the width of a PR comment, so nothing is scaled down
# Okabe-Ito: told apart with the common colour-vision deficiencies; fixed so that a mode keeps its
# colour across figures and across results files.
MODE_COLOURS = {
    "full": "#0072B2",
    "ephemeral": "#E69F00",
    "hash-only": "#009E73",
    "ephemeral+hash-only": "#CC79A7",
    "raw": "#D55E00",
    "raw-file": "#56B4E9",
}
EXTRA_COLOURS = ("#000000", "#999999", "#8C564B", "#F0E442", "#17BECF", "#7F7F7F")
RC: dict[RcKeyType, Any] = {
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "mmbench",  # stable element ids: an SVG re-rendered from the same data diffs clean
}
DRAWN = ("ok", "extrapolated")
_NOT_A_COMBINATION = ("mode", "rollouts")


# --- the series (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetainedSeries:
    """Figure (a), one mode, in GiB."""

    mode: str
    k: list[int]  # measured K
    live: list[Stat]  # retained_live_bytes: median and min-max of the ok repeats
    raw_k: list[int]  # one entry per ok repeat
    raw: list[float]  # retained_bytes of that repeat
    extrapolated_k: list[int]
    extrapolated: list[float]  # retained_live_bytes of extrapolated records (median)
    predicted_k: list[int]
    predicted: list[float]  # predicted_retained_bytes
    fit_k: list[float]  # the least-squares line's two ends (empty without a fit)
    fit: list[float]


@dataclass(frozen=True, slots=True)
class ShippedBar:
    """Figure (b), one mode at its largest measured K, in MiB per rollout."""

    mode: str
    k: int
    per_rollout: Stat
    predicted: float | None


@dataclass(frozen=True, slots=True)
class TurnSeries:
    """Figure (c), one mode at its largest measured K: MiB per rollout in each turn."""

    mode: str
    k: int
    turns: list[int]
    per_rollout: list[float]  # median over repeats of bytes_per_turn[t] / K


@dataclass(frozen=True, slots=True)
class PeakSeries:
    """Figure (d), one mode, medians in GiB (None where a reading is missing)."""

    mode: str
    k: list[int]
    peak: list[float | None]
    retained: list[float | None]
    live: list[float | None]


@dataclass(frozen=True, slots=True)
class TimelineSeries:
    """The timeline figure, one mode at its largest K with a timeline file: RSS in GiB over
    seconds since the worker started."""

    mode: str
    k: int
    repeat: int
    t: list[float]
    client: list[float]  # NaN where there was no reading
    engine: list[float]
    turns: list[int]
    turn_times: list[float]  # when every rollout had finished that turn


@dataclass(frozen=True, slots=True)
class ModeCost:
    """The modes figure, one mode at its largest measured K: both sides of its trade, medians of
    the repeats (None where a reading is missing)."""

    mode: str
    k: int
    client_retained: float | None  # GiB, live
    engine_retained: float | None  # GiB, engine RSS above its baseline at the end
    client_peak: float | None  # GiB above baseline
    engine_peak: float | None  # GiB above its baseline
    shipped_per_rollout: float | None  # MiB
    client_cpu_per_rollout: float | None  # seconds
    engine_cpu_per_rollout: float | None


@dataclass(frozen=True, slots=True)
class PlotData:
    scenario: str
    machine: str
    setting: str  # the fixed parameters of the drawn points
    note: str | None  # which combination is drawn, when there are several
    modes: list[str]
    retained: list[RetainedSeries]
    shipped: list[ShippedBar]
    per_turn: list[TurnSeries]
    peak: list[PeakSeries]
    timelines: tuple[TimelineSeries, ...] = ()
    tradeoff: CacheTradeoff | None = None  # the first, where the results vary engine_cache_gb
    tradeoff_note: str | None = None  # when there are others, not drawn
    costs: tuple[ModeCost, ...] = ()
    system: tuple[SystemRow, ...] = ()  # points that ran the trainer stage (every combination)

    @property
    def empty(self) -> bool:
        drawn = (self.retained, self.shipped, self.per_turn, self.peak, self.tradeoff, self.system)
        return not any(drawn)


def mode_colours(modes: Sequence[str]) -> dict[str, str]:
    """The fixed colours for the four modes; others take the next ones in registry order, so that
    a mode's colour does not depend on which other modes a file holds."""
    extras = list(dict.fromkeys(m for m in (*MODES, *modes) if m not in MODE_COLOURS))
    return {m: MODE_COLOURS.get(m) or EXTRA_COLOURS[extras.index(m) % len(EXTRA_COLOURS)] for m in modes}


def _stat(values: Sequence[float | int | None], unit: float) -> Stat | None:
    vs = [v / unit for v in values if v is not None]
    return Stat(statistics.median(vs), min(vs), max(vs), len(vs)) if vs else None


def _median(values: Sequence[float | int | None], unit: float) -> float | None:
    s = _stat(values, unit)
    return None if s is None else s.median


def _combination(r: PointRecord, by_machine: bool = False) -> tuple[Any, ...]:
    params = tuple(getattr(r.config, k) for k in field_names() if k not in _NOT_A_COMBINATION)
    return (*params, split_key(r, by_machine))  # a figure draws one kind of machine


def select(points: list[PointRecord]) -> tuple[list[PointRecord], str | None]:
    """The records of the first combination (of every parameter but mode and K, and the machine
    where machines differ) that has drawable points, and a note naming it when the file holds others."""
    by_machine = machines_differ(points)
    combos: dict[tuple[Any, ...], list[PointRecord]] = {}
    for p in points:
        if p.status in DRAWN:
            combos.setdefault(_combination(p, by_machine), []).append(p)
    if not combos:
        return [], None
    first = next(iter(combos))
    if len(combos) == 1:
        return combos[first], None
    names = [k for k in field_names() if k not in _NOT_A_COMBINATION] + ["machine"]
    varying = [i for i, _ in enumerate(names) if len({c[i] for c in combos}) > 1]
    shown = ", ".join(f"{names[i]}={first[i]}" for i in varying)
    return combos[first], f"drawn: {shown} (first of {len(combos)} combinations; the others are not shown)"


def _machine(env: dict[str, Any]) -> str:
    parts = [str(env["cpu_model"])] if env.get("cpu_model") else []
    if isinstance(env.get("cpu_count"), int):
        parts.append(f"{env['cpu_count']} CPUs")
    if isinstance(env.get("memory_total_bytes"), int | float):
        parts.append(f"{env['memory_total_bytes'] / GIB:.1f} GiB RAM")
    return ", ".join(parts) or "machine unknown"


def _drawn_machine(records: list[PointRecord], results: ResultsFile) -> str:
    """The results file's machine; the drawn points' own where the file holds several."""
    drawn = machines(records)
    return drawn[0] if drawn and machines_differ(results.points) else _machine(results.environment)


def _setting(r: PointRecord) -> str:
    c = r.config
    w, h = parse_image_size(c.image_size)
    per_turn = f"{c.images_per_turn} image{'s' if c.images_per_turn != 1 else ''}/turn"
    return f"{c.model}, {w}x{h} images, {c.turns} turns, {per_turn}"


def _xy(pairs: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [x for x, _ in pairs], [y for _, y in pairs]


def _retained(records: list[PointRecord], modes: list[str]) -> list[RetainedSeries]:
    fits = {f.mode: f for f in mode_fits(records)}
    groups = sorted(group(records), key=lambda g: g.config.rollouts)
    out: list[RetainedSeries] = []
    for mode in modes:
        mine = [g for g in groups if g.config.mode == mode]
        live = [
            (g.config.rollouts, _stat([r.client.retained_live_bytes for r in g.ok_records], GIB))
            for g in mine
        ]
        measured = [(k, s) for k, s in live if s is not None]
        ok = [r for g in mine for r in g.ok_records]
        raw = [
            (r.config.rollouts, r.client.retained_bytes / GIB)
            for r in ok
            if r.client.retained_bytes is not None
        ]
        ex: list[tuple[int, float]] = []
        pred: list[tuple[int, float]] = []
        for g in mine:
            extra = [r.client.retained_live_bytes for r in g.records if r.status == "extrapolated"]
            if (m := _median(extra, GIB)) is not None:
                ex.append((g.config.rollouts, m))
            if (m := _median([r.prediction.retained_bytes for r in g.records], GIB)) is not None:
                pred.append((g.config.rollouts, m))
        if not (measured or ex):
            continue
        ks = [k for k, _ in measured]
        fit = fits.get(mode)
        fit_k = [float(fit.k_from), float(max(ks))] if fit and ks and max(ks) > fit.k_from else []
        fit_y = [fit.fit.at(x) / GIB for x in fit_k] if fit else []
        series = (*_xy(raw), *_xy(ex), *_xy(pred))
        out.append(RetainedSeries(mode, ks, [s for _, s in measured], *series, fit_k, fit_y))
    return out


def _largest_k(records: list[PointRecord], mode: str, has: Callable[[PointRecord], bool]) -> int | None:
    ks = [r.config.rollouts for r in records if r.config.mode == mode and r.ok and has(r)]
    return max(ks) if ks else None


def _shipped(records: list[PointRecord], modes: list[str]) -> list[ShippedBar]:
    out: list[ShippedBar] = []
    for mode in modes:
        k = _largest_k(records, mode, lambda r: r.traffic.bytes_shipped is not None)
        if k is None:
            continue
        at_k = [r for r in records if r.config.mode == mode and r.config.rollouts == k]
        s = _stat(
            [r.traffic.bytes_shipped / k for r in at_k if r.ok and r.traffic.bytes_shipped is not None], MIB
        )
        pred = [r.prediction.bytes_shipped / k for r in at_k if r.prediction.bytes_shipped is not None]
        if s is not None:  # always: _largest_k found one
            out.append(ShippedBar(mode, k, s, _median(pred, MIB)))
    return out


def _per_turn(records: list[PointRecord], modes: list[str]) -> list[TurnSeries]:
    out: list[TurnSeries] = []
    for mode in modes:
        k = _largest_k(records, mode, lambda r: bool(r.traffic.bytes_per_turn))
        if k is None:
            continue
        runs = [
            r.traffic.bytes_per_turn
            for r in records
            if r.config.mode == mode and r.config.rollouts == k and r.ok
        ]
        n = max(len(b) for b in runs)
        values = [_median([b[t] / k for b in runs if len(b) > t], MIB) for t in range(n)]
        out.append(TurnSeries(mode, k, list(range(1, n + 1)), [v or 0.0 for v in values]))
    return out


_PEAK_METRICS = tuple(
    map(attrgetter, ("client.peak_bytes", "client.retained_bytes", "client.retained_live_bytes"))
)


def _peak(records: list[PointRecord], modes: list[str]) -> list[PeakSeries]:
    groups = sorted(group(records), key=lambda g: g.config.rollouts)
    out: list[PeakSeries] = []
    for mode in modes:
        rows: list[tuple[int, list[float | None]]] = []
        for g in (g for g in groups if g.config.mode == mode):
            row = [_median([read(r) for r in g.ok_records], GIB) for read in _PEAK_METRICS]
            if any(v is not None for v in row):
                rows.append((g.config.rollouts, row))
        if rows:
            peak, raw, live = ([row[i] for _, row in rows] for i in range(3))
            out.append(PeakSeries(mode, [k for k, _ in rows], peak, raw, live))
    return out


def _costs(records: list[PointRecord], modes: list[str]) -> tuple[ModeCost, ...]:
    out: list[ModeCost] = []
    for mode in modes:
        k = _largest_k(records, mode, lambda r: r.client.retained_live_bytes is not None)
        if k is None:
            continue
        at_k = [r for r in records if r.config.mode == mode and r.config.rollouts == k and r.ok]
        ledgers = [ledger(r) for r in at_k]

        def per_k(path: str, rs: list[PointRecord] = at_k, kk: int = k) -> float | None:
            values = [attrgetter(path)(r) for r in rs]
            return _median([None if v is None else v / kk for v in values], 1.0)

        shipped = per_k("traffic.bytes_shipped")
        out.append(
            ModeCost(
                mode, k,
                client_retained=_median([r.client.retained_live_bytes for r in at_k], GIB),
                engine_retained=_median([lg.engine_above_baseline for lg in ledgers], GIB),
                client_peak=_median([r.client.peak_bytes for r in at_k], GIB),
                engine_peak=_median([lg.engine_peak_above_baseline for lg in ledgers], GIB),
                shipped_per_rollout=None if shipped is None else shipped / MIB,
                client_cpu_per_rollout=per_k("client.cpu_s"),
                engine_cpu_per_rollout=per_k("engine.figures.cpu_s"),
            )
        )  # fmt: skip
    return tuple(out)


def _gib_or_nan(values: list[int | None]) -> list[float]:
    return [float("nan") if v is None else v / GIB for v in values]


def _timelines(records: list[PointRecord], modes: list[str], results_dir: Path) -> tuple[TimelineSeries, ...]:
    """Per mode, the timeline of its largest K that has a readable file (the first repeat that
    does); a missing or damaged file is passed over."""
    out: list[TimelineSeries] = []
    for mode in modes:
        mine = [r for r in records if r.config.mode == mode and r.ok and r.timing.timeline_file]
        for r in sorted(mine, key=lambda r: (-r.config.rollouts, r.repeat)):
            try:
                tl = load_timeline(results_dir / str(r.timing.timeline_file))
            except MmbenchError:
                continue
            bounds = tl.turn_boundaries()
            out.append(
                TimelineSeries(
                    mode, r.config.rollouts, r.repeat, tl.t, _gib_or_nan(tl.client_rss),
                    _gib_or_nan(tl.engine_rss), [b[0] for b in bounds], [b[1] for b in bounds],
                )
            )  # fmt: skip
            break
    return tuple(out)


def _tradeoff(results: ResultsFile) -> tuple[CacheTradeoff | None, str | None]:
    trades = cache_tradeoffs(results.points)
    if not trades:
        return None, None
    first = trades[0]
    if len(trades) == 1:
        return first, None
    return first, f"drawn: {first.title} (first of {len(trades)}; the others are not shown)"


def plot_data(results: ResultsFile, results_dir: Path | None = None) -> PlotData:
    """Every series the figures draw, in axis units, for the first drawable combination. With
    `results_dir`, the timelines saved there are read too."""
    records, note = select(results.points)
    order = {m: i for i, m in enumerate(MODES)}
    modes = sorted({r.config.mode for r in records}, key=lambda m: (order.get(m, len(order)), m))
    tradeoff, tradeoff_note = _tradeoff(results)
    return PlotData(
        scenario=str(results.scenario.get("name") or "unnamed scenario"),
        machine=_drawn_machine(records, results),
        setting=_setting(records[0]) if records else "",
        note=note,
        modes=modes,
        retained=_retained(records, modes),
        shipped=_shipped(records, modes),
        per_turn=_per_turn(records, modes),
        peak=_peak(records, modes),
        timelines=_timelines(records, modes, results_dir) if results_dir is not None else (),
        tradeoff=tradeoff,
        tradeoff_note=tradeoff_note,
        costs=_costs(records, modes),
        system=tuple(system_rows(results.points)),
    )


# --- drawing -------------------------------------------------------------------------------------


def _figure(data: PlotData, what: str, **kwargs: Any) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained", **kwargs)
    lines = [f"{what} — scenario {data.scenario}", f"{data.machine} · {data.setting}"]
    fig.suptitle("\n".join([*lines, *([data.note] if data.note else [])]))
    return fig, axes


def _layer(i: int) -> dict[str, float]:
    """Sizes by a mode's place in the order: modes often coincide (full and hash-only retain the
    same live bytes, full and ephemeral ship the same), so the earlier ones are drawn larger
    underneath and every series stays visible."""
    return {"ms": max(4.0, 11.0 - 2.0 * i), "lw": max(1.2, 5.0 - 1.2 * i)}


def _legend(ax: Any, handles: list[Any] | None = None) -> None:
    # Beside the axes, not over them: the data may sit anywhere. Anchored to the axes (not the
    # figure) so that it starts below the title; constrained layout makes room for it.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _draw_retained(data: PlotData, colours: dict[str, str]) -> Figure | None:
    if not data.retained:
        return None
    fig, ax = _figure(data, "Retained memory against K")
    for i, s in enumerate(data.retained):
        c, size = colours[s.mode], _layer(i)
        ax.plot(s.raw_k, s.raw, ls="none", marker="D", ms=5, color=c, alpha=0.3)
        # The fit translucent and the prediction opaque on top: where they agree both still show.
        ax.plot(s.fit_k, s.fit, lw=size["lw"], color=c, alpha=0.5, solid_capstyle="butt")
        ax.plot(s.predicted_k, s.predicted, ls="--", lw=1.5, color=c, zorder=2.5)
        if s.k:
            med = [st.median for st in s.live]
            lo = [m - st.lo for m, st in zip(med, s.live, strict=True)]
            hi = [st.hi - m for m, st in zip(med, s.live, strict=True)]
            ax.errorbar(s.k, med, yerr=[lo, hi], ls="none", marker="o", ms=size["ms"], color=c, capsize=4)
        hollow: dict[str, Any] = {"mfc": "white", "mec": c, "mew": 1.8}
        ax.plot(s.extrapolated_k, s.extrapolated, ls="none", marker="o", ms=size["ms"], **hollow)
    log = _k_axis(ax, sorted({k for s in data.retained for k in (*s.k, *s.extrapolated_k, *s.predicted_k)}))
    ax.set_xlabel("K (concurrent rollouts)" + (", log scale" if log else ""))
    ax.set_ylabel("retained above baseline (GiB" + (", log scale: slope 1 = linear in K)" if log else ")"))
    _memory_axis(ax, log)
    grey = "#444444"
    keys = [Line2D([], [], color=colours[s.mode], marker="o", lw=2.5, label=s.mode) for s in data.retained]
    keys += [
        Line2D([], [], ls="none", marker="o", color=grey, label="live (after trim):\nmedian, min–max"),
        Line2D([], [], color=grey, lw=3, alpha=0.5, label="least-squares fit"),
        Line2D([], [], color=grey, ls="--", lw=1.5, label="model prediction"),
        Line2D([], [], ls="none", marker="D", color=grey, alpha=0.3, label="raw (before trim)"),
    ]
    if any(s.extrapolated_k for s in data.retained):
        hollow = {"mfc": "white", "mec": grey, "mew": 1.8}
        keys.append(Line2D([], [], ls="none", marker="o", label="extrapolated", **hollow))
    _legend(ax, keys)
    return fig


def _draw_shipped(data: PlotData, colours: dict[str, str]) -> Figure | None:
    if not data.shipped:
        return None
    ks = {b.k for b in data.shipped}
    at = f" at K={ks.pop()}" if len(ks) == 1 else " at each mode's largest K"
    fig, ax = _figure(data, f"Bytes shipped per rollout{at}")
    x = list(range(len(data.shipped)))
    med = [b.per_rollout.median for b in data.shipped]
    err = [
        [m - b.per_rollout.lo for m, b in zip(med, data.shipped, strict=True)],
        [b.per_rollout.hi - m for m, b in zip(med, data.shipped, strict=True)],
    ]
    bars = ax.bar(x, med, width=0.6, color=[colours[b.mode] for b in data.shipped], yerr=err, capsize=4)
    ax.bar_label(bars, labels=[f"{m:,.1f}" for m in med], padding=3)
    pred = [(i, b.predicted) for i, b in enumerate(data.shipped) if b.predicted is not None]
    if pred:
        tick: dict[str, Any] = {"ls": "none", "marker": "_", "mew": 2, "color": "black"}
        ax.plot([i for i, _ in pred], [p for _, p in pred], ms=40, **tick)
        key = Line2D([], [], ms=18, label="model prediction", **tick)
        ax.legend(handles=[key], loc="upper right")
    labels = [b.mode if len(ks) <= 1 else f"{b.mode}\nK={b.k}" for b in data.shipped]
    ax.set_xticks(x, labels)
    ax.set_ylabel("request bytes per rollout (MiB)")
    ax.set_ylim(0, max(med) * 1.15)
    ax.grid(axis="x", visible=False)
    return fig


_MARKERS = ("o", "s", "^", "D", "v", "P")


def _draw_per_turn(data: PlotData, colours: dict[str, str]) -> Figure | None:
    if not data.per_turn:
        return None
    ks = {s.k for s in data.per_turn}
    at = f" at K={next(iter(ks))}" if len(ks) == 1 else " at each mode's largest K"
    fig, ax = _figure(data, f"Bytes shipped per rollout in each turn{at}")
    for i, s in enumerate(data.per_turn):
        label = s.mode if len(ks) == 1 else f"{s.mode} (K={s.k})"
        style: dict[str, Any] = {"marker": _MARKERS[i % len(_MARKERS)], **_layer(i)}
        ax.plot(s.turns, s.per_rollout, color=colours[s.mode], label=label, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("turn")
    ax.set_ylabel("request bytes per rollout (MiB)")
    ax.set_ylim(bottom=0)
    _legend(ax)
    return fig


def _draw_peak(data: PlotData, colours: dict[str, str]) -> Figure | None:
    if not data.peak:
        return None
    n = len(data.peak)
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    rows = -(-n // cols)
    fig, axes = _figure(
        data,
        "Peak beside retained, per mode",
        nrows=rows,
        ncols=cols,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    flat = list(axes.flat)
    styles = (("peak", "-", "o"), ("retained raw", "--", "s"), ("retained live", ":", "^"))
    for ax, s in zip(flat, data.peak, strict=False):
        c = colours[s.mode]
        for (_, ls, marker), ys in zip(styles, (s.peak, s.retained, s.live), strict=True):
            ax.plot(
                s.k, [float("nan") if y is None else y for y in ys], ls=ls, marker=marker, color=c, lw=1.8
            )
        ax.set_title(s.mode, color=c, fontweight="bold")
        log = _k_axis(ax, sorted({k for p in data.peak for k in p.k}))
        _memory_axis(ax, log)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[max(0, n - cols) : n]:  # the lowest panel of each column (figure x-labels
        ax.xaxis.set_tick_params(labelbottom=True)  # collide with the legend below)
        ax.set_xlabel("K (concurrent rollouts)")
    fig.supylabel("above baseline (GiB" + (", log scale)" if log else ")"))
    keys = [Line2D([], [], color="#444444", ls=ls, marker=m, label=name) for name, ls, m in styles]
    # Below the panels: beside them it would squeeze one column, above them it meets the title.
    fig.legend(handles=keys, loc="outside lower center", ncols=len(keys))
    return fig


ENGINE_COLOUR = "#333333"


def _draw_timeline(data: PlotData, colours: dict[str, str]) -> Figure | None:
    if not data.timelines:
        return None
    n = len(data.timelines)
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    ks = {s.k for s in data.timelines}
    at = f" at K={next(iter(ks))}" if len(ks) == 1 else " at each mode's largest K"
    fig, axes = _figure(
        data,
        f"Memory over time{at}: client and engine RSS",
        nrows=rows,
        ncols=cols,
        sharey=True,
        squeeze=False,
    )
    flat = list(axes.flat)
    for ax, s in zip(flat, data.timelines, strict=False):
        c = colours[s.mode]
        for i, (turn, when) in enumerate(zip(s.turns, s.turn_times, strict=True)):
            ax.axvline(when, color="#666666", lw=0.8, ls=":", alpha=0.6, zorder=1)
            # Turn numbers along the top, every one when there are few, else every few.
            step = max(1, len(s.turns) // 8)
            if i % step == 0 or turn == s.turns[-1]:
                ax.text(when, 1.0, str(turn), transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=8, color="#777777")  # fmt: skip
        total = [a + b for a, b in zip(s.client, s.engine, strict=True)]
        ax.plot(s.t, total, color="#BBBBBB", lw=1.0, zorder=2)
        ax.plot(s.t, s.engine, color=ENGINE_COLOUR, lw=1.4, ls="--", zorder=3)
        ax.plot(s.t, s.client, color=c, lw=1.6, zorder=4)
        title = s.mode if len(ks) == 1 else f"{s.mode} (K={s.k})"
        ax.set_title(title, color=c, fontweight="bold", pad=14)
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in flat[max(0, n - cols) : n]:
        ax.set_xlabel("seconds since the worker started")
    fig.supylabel("RSS (GiB)")
    keys = [
        Line2D([], [], color="#444444", lw=1.6, label="client (worker) RSS, in the mode's colour"),
        Line2D([], [], color=ENGINE_COLOUR, lw=1.4, ls="--", label="engine RSS"),
        Line2D([], [], color="#BBBBBB", lw=1.0, label="client + engine"),
        Line2D([], [], color="#666666", lw=0.8, ls=":", alpha=0.6, label="every rollout finished turn n"),
    ]
    fig.legend(handles=keys, loc="outside lower center", ncols=2)
    return fig


def _draw_tradeoff(data: PlotData, colours: dict[str, str]) -> Figure | None:
    trade = data.tradeoff
    if trade is None:
        return None
    colours = colours | {m: c for m, c in mode_colours(trade.modes).items() if m not in colours}
    fig = plt.figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    lines = [f"Engine cache trade-off of the hash-only modes — scenario {data.scenario}",
             f"{data.machine} · {data.setting}"]  # fmt: skip
    if data.tradeoff_note:
        lines.append(data.tradeoff_note)
    fig.suptitle("\n".join(lines))
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    shipped_ax = fig.add_subplot(grid[0, :])
    fb_ax = fig.add_subplot(grid[1, 0], sharex=shipped_ax)
    cache_ax = fig.add_subplot(grid[1, 1], sharex=shipped_ax)
    # The sizes are spread over orders of magnitude and include 0: one evenly spaced slot each.
    gbs = list(trade.cache_gb)
    slot = {gb: i for i, gb in enumerate(gbs)}
    for i, mode in enumerate(trade.modes):
        pts = [p for gb in gbs if (p := trade.at(mode, gb)) is not None]
        style: dict[str, Any] = {"color": colours[mode], "marker": _MARKERS[i % len(_MARKERS)], **_layer(i)}
        shipped_ax.plot([slot[p.engine_cache_gb] for p in pts], [p.bytes_shipped.median / MIB for p in pts],
                        label=mode, **style)  # fmt: skip
        fb = [(slot[p.engine_cache_gb], p.fallbacks.median) for p in pts if p.fallbacks is not None]
        fb_ax.plot([x for x, _ in fb], [y for _, y in fb], **style)
        cache = [(slot[p.engine_cache_gb], p.engine_cache_bytes.median / MIB)
                 for p in pts if p.engine_cache_bytes is not None]  # fmt: skip
        cache_ax.plot([x for x, _ in cache], [y for _, y in cache], **style)
    if trade.full_bytes_shipped is not None:
        shipped_ax.axhline(trade.full_bytes_shipped / MIB, color=MODE_COLOURS["full"], ls="--", lw=1.5,
                           label="full would ship (model)")  # fmt: skip
    if trade.ideal_bytes_shipped is not None:
        shipped_ax.axhline(trade.ideal_bytes_shipped / MIB, color="black", ls=":", lw=1.5,
                           label="ideal: each image once\n(hash-only model, no faults)")  # fmt: skip
    if trade.working_set_bytes is not None:
        cache_ax.axhline(
            trade.working_set_bytes / MIB, color="black", ls=":", lw=1.2, label="working set (model)"
        )
    cache_ax.plot(range(len(gbs)), [gb * GIB / MIB for gb in gbs], color="#999999", ls="none", marker="_",
                  ms=14, mew=1.5, label="capacity")  # fmt: skip
    tops = [p.engine_cache_bytes.median / MIB for p in trade.points if p.engine_cache_bytes is not None]
    if trade.working_set_bytes is not None:
        tops.append(trade.working_set_bytes / MIB)
    cache_ax.set_ylim(0, max(tops or [1.0]) * 1.25)
    shipped_ax.set_ylabel("bytes shipped (MiB)")
    shipped_ax.set_ylim(bottom=0)
    fb_ax.set_ylabel("fallbacks (resends)")
    fb_ax.set_ylim(bottom=0)
    fb_ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    cache_ax.set_ylabel("engine cache (MiB)")
    cache_ax.legend(loc="upper left", fontsize=9)
    for ax in (fb_ax, cache_ax):
        ax.set_xlabel("engine_cache_gb")
    shipped_ax.set_xticks(range(len(gbs)), [f"{g:g}" for g in gbs])
    shipped_ax.set_xlim(-0.3, len(gbs) - 0.7)
    shipped_ax.xaxis.set_tick_params(labelbottom=False)
    _legend(shipped_ax)
    return fig


_COST_PANELS = (
    ("retained above baseline (GiB)", "client_retained", "engine_retained"),
    ("peak above baseline (GiB)", "client_peak", "engine_peak"),
    ("bytes shipped per rollout (MiB)", "shipped_per_rollout", None),
    ("CPU seconds per rollout", "client_cpu_per_rollout", "engine_cpu_per_rollout"),
)


def _draw_costs(data: PlotData, colours: dict[str, str]) -> Figure | None:
    """Each mode's trade at a glance: memory it keeps and peaks at, bytes it ships and CPU it
    costs, the client (solid) beside the engine (hatched)."""
    costs = [c for c in data.costs if c.client_retained is not None]
    if len(costs) < 2 or all(c.client_cpu_per_rollout is None for c in costs):
        return None
    ks = {c.k for c in costs}
    at = f" at K={next(iter(ks))}" if len(ks) == 1 else " at each mode's largest K"
    fig, axes = _figure(data, f"What each mode costs, client and engine{at}", nrows=2, ncols=2, squeeze=False)
    x = list(range(len(costs)))
    for ax, (label, client, engine) in zip(axes.flat, _COST_PANELS, strict=True):
        width = 0.4 if engine else 0.6
        left = [i - width / 2 for i in x] if engine else x
        values = [getattr(c, client) or 0.0 for c in costs]
        ax.bar(left, values, width=width, color=[colours[c.mode] for c in costs])
        if engine:
            right = [i + width / 2 for i in x]
            values = [getattr(c, engine) or 0.0 for c in costs]
            ax.bar(right, values, width=width, color="white", edgecolor=[colours[c.mode] for c in costs],
                   hatch="///", linewidth=1.5)  # fmt: skip
        ax.set_title(label)
        ax.set_xticks(x, [c.mode.replace("+", "+\n") for c in costs], fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(axis="x", visible=False)
    keys = [
        matplotlib.patches.Patch(facecolor="#777777", label="client"),
        matplotlib.patches.Patch(facecolor="white", edgecolor="#777777", hatch="///", label="engine"),
    ]
    fig.legend(handles=keys, loc="outside lower center", ncols=2)
    return fig


def _draw_system(data: PlotData, colours: dict[str, str]) -> Figure | None:
    """The whole system per point: env worker, engine, orchestrator and trainer ranks (issue 31)."""
    if not data.system:
        return None
    # every combination is drawn here: the note naming the one the other figures draw does not apply
    whole = dataclasses.replace(data, note=None)
    fig, axes = _figure(whole, "The whole system: each stage after the rollout", ncols=3, sharey=True)
    draw_system(list(data.system), list(axes))
    keys: list[Any] = [matplotlib.patches.Patch(facecolor=c, label=s) for s, c in STAGE_COLOURS.items()]
    keys.append(Line2D([], [], marker="x", color="black", linestyle="", label="predicted"))
    fig.legend(handles=keys, loc="outside lower center", ncols=len(keys))
    return fig


FIGURES: tuple[tuple[str, Callable[[PlotData, dict[str, str]], Figure | None]], ...] = (
    ("retained-vs-k", _draw_retained),
    ("shipped-per-rollout", _draw_shipped),
    ("shipped-per-turn", _draw_per_turn),
    ("peak-vs-retained", _draw_peak),
    ("memory-timeline", _draw_timeline),
    ("engine-cache", _draw_tradeoff),
    ("modes", _draw_costs),
    ("system", _draw_system),
)


def check_format(fmt: str) -> str:
    if fmt.lower() not in FORMATS:
        raise MmbenchError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return fmt.lower()


def figures(data: PlotData) -> Iterator[tuple[str, Figure]]:
    """(name, figure) for every figure that has data; the caller saves and closes each."""
    colours = mode_colours(data.modes)
    for name, draw in FIGURES:
        fig = draw(data, colours)
        if fig is not None:
            yield name, fig


def _save(fig: Figure, path: Path, fmt: str) -> None:
    """Temp file + rename, so that a reader never sees half a figure; the figure is closed."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            # No date in the SVG: re-rendering the same results gives the same file.
            fig.savefig(f, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
        os.replace(tmp, path)
    except OSError as exc:
        raise MmbenchError(f"{path}: cannot write the figure ({exc.strerror})") from None
    finally:
        plt.close(fig)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _k_axis(ax: Axes, ks: list[int]) -> bool:
    """K on a linear axis, or a log2 one when K spans more than 16x (4..256 would crowd the left);
    True when it is logarithmic, and then memory must be too (`_memory_axis`)."""
    log = bool(ks and ks[0] > 0 and ks[-1] / ks[0] > 16)
    if log:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    return log


def _memory_axis(ax: Axes, log: bool) -> None:
    """Memory on the same kind of axis as K: over a log K axis a linear memory axis draws growth
    linear in K as an explosion, while on log-log axes it is a straight line of slope 1."""
    if log:
        ax.set_yscale("log")  # a value <= 0 (noise at a small K) has no place here and is left out
    else:
        ax.set_ylim(bottom=0)


def plot_results(
    results: ResultsFile,
    out_dir: Path,
    fmt: str = "png",
    *,
    where: str | None = None,
    results_dir: Path | None = None,
) -> list[Path]:
    """Write every figure that has data into `out_dir` as `fmt`; returns the paths written.

    `where` names the results in the error raised when there is nothing to draw; `results_dir`
    is where the timeline files the records name are read from.
    """
    fmt = check_format(fmt)
    data = plot_data(results, results_dir)
    if data.empty:
        counts = Counter(p.status for p in results.points)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
        raise MmbenchError(f"no measured points to plot in {where or 'the results'} (points: {summary})")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MmbenchError(f"{out_dir}: cannot create the plot directory ({exc.strerror})") from None
    written: list[Path] = []
    with plt.rc_context(RC):
        for name, fig in figures(data):
            path = out_dir / f"{name}.{fmt}"
            _save(fig, path, fmt)
            written.append(path)
    return written
