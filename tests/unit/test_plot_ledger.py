"""The two figures of the whole system in `mmbench plot`: the memory timeline (from the timeline
files beside the results) and the engine-cache trade-off (where the results vary engine_cache_gb)."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmbench.config import PointConfig
from mmbench.measure.timeline import Timeline, save_timeline
from mmbench.reporters import plot as rp
from mmbench.results import PointRecord
from mmbench.units import GIB, MIB
from tests.unit.test_plot import NAMES, rec, results, standard


def write_timeline(directory: Path, r: PointRecord, scale: int = 1) -> PointRecord:
    """A timeline for the record: RSS ramps, two rollouts finish two turns."""
    n = 50
    tl = Timeline(
        t0=1000.0,
        t=[i * 0.005 for i in range(n)],
        client_rss=[scale * (i + 1) * MIB for i in range(n)],
        engine_rss=[None, *(scale * 2 * MIB for _ in range(n - 1))],
        turn_ends=[],
    ).with_turn_ends([(1000.05, 0, 1), (1000.1, 1, 1), (1000.2, 1, 2), (1000.15, 0, 2)])
    path = save_timeline(tl, directory / "timelines", r.config, r.repeat)
    return replace(r, timing=replace(r.timing, timeline_file=f"timelines/{path.name}"))


def with_timelines(tmp_path: Path) -> list[PointRecord]:
    """standard() with timelines for every ok record: full K=4 (3 repeats) and hash-only K=4 are the
    largest measured K of each mode."""
    return [write_timeline(tmp_path, r, scale=r.config.rollouts) if r.ok else r for r in standard().points]


def test_timeline_series_at_each_modes_largest_k(tmp_path: Path) -> None:
    data = rp.plot_data(results(with_timelines(tmp_path)), tmp_path)
    assert [(s.mode, s.k, s.repeat) for s in data.timelines] == [("full", 4, 0), ("hash-only", 4, 0)]
    s = data.timelines[0]
    assert s.t[:2] == [0.0, 0.005]
    assert s.client[0] == pytest.approx(4 * MIB / GIB)
    assert math.isnan(s.engine[0]) and s.engine[1] == pytest.approx(8 * MIB / GIB)
    assert s.turns == [1, 2] and s.turn_times == [pytest.approx(0.1), pytest.approx(0.2)]


def test_without_a_results_dir_or_files_there_is_no_timeline(tmp_path: Path) -> None:
    recs = with_timelines(tmp_path)
    assert rp.plot_data(results(recs)).timelines == ()
    assert rp.plot_data(standard(), tmp_path).timelines == ()


def test_a_missing_timeline_file_falls_back_to_the_next_repeat_or_smaller_k(tmp_path: Path) -> None:
    recs = with_timelines(tmp_path)
    first_full_k4 = next(r for r in recs if r.config.mode == "full" and r.config.rollouts == 4)
    (tmp_path / str(first_full_k4.timing.timeline_file)).unlink()
    hash_k4 = next(r for r in recs if r.config.mode == "hash-only" and r.config.rollouts == 4)
    (tmp_path / str(hash_k4.timing.timeline_file)).write_text("{damaged")
    data = rp.plot_data(results(recs), tmp_path)
    assert [(s.mode, s.k, s.repeat) for s in data.timelines] == [("full", 4, 1), ("hash-only", 2, 0)]


def test_timeline_figure_is_written_when_files_exist(tmp_path: Path) -> None:
    paths = rp.plot_results(results(with_timelines(tmp_path)), tmp_path / "plots", results_dir=tmp_path)
    assert [p.name for p in paths] == [f"{n}.png" for n in NAMES] + ["memory-timeline.png"]
    with Image.open(io.BytesIO(paths[-1].read_bytes())) as im:
        assert im.size == (900, 550)


def test_timeline_panels_keep_the_mode_colours(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    data = rp.plot_data(results(with_timelines(tmp_path)), tmp_path)
    fig = rp._draw_timeline(data, rp.mode_colours(data.modes))
    assert fig is not None
    try:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == ["full", "hash-only"]
        for ax, mode in zip(panels, ("full", "hash-only"), strict=True):
            colours = {to_hex(line.get_color()) for line in ax.get_lines()}
            assert to_hex(rp.MODE_COLOURS[mode]) in colours
            assert to_hex(rp.ENGINE_COLOUR) in colours
            assert len([t for t in ax.texts if t.get_text() in ("1", "2")]) == 2  # turn numbers
    finally:
        plt.close(fig)


# --- the engine-cache trade-off ---


def tradeoff(**kw: Any) -> list[PointRecord]:
    out = []
    for mode in ("hash-only", "ephemeral+hash-only"):
        for gb, shipped, fb, cache in (
            (0.0, 900, 8, 0),
            (0.05, 500, 4, 50),
            (0.1, 300, 2, 100),
            (1.0, 100, 0, 384),
        ):
            figures = dict(bytes_shipped=shipped * MIB, fallbacks=fb, engine_cache_bytes=cache * MIB,
                           source_bytes_per_image=500_000.0)  # fmt: skip
            out.append(rec(mode, 8, figures=figures, engine_cache_gb=gb, **kw))
    return out


def test_tradeoff_data_where_engine_cache_gb_varies() -> None:
    data = rp.plot_data(results(tradeoff()))
    assert data.tradeoff is not None and data.tradeoff_note is None
    assert data.tradeoff.cache_gb == (0.0, 0.05, 0.1, 1.0)
    assert data.tradeoff.ideal_bytes_shipped and data.tradeoff.full_bytes_shipped
    assert rp.plot_data(standard()).tradeoff is None


def test_several_tradeoffs_draw_the_first_and_say_so() -> None:
    data = rp.plot_data(results(tradeoff() + tradeoff(image_size="256")))
    assert data.tradeoff is not None and data.tradeoff.params == (("image_size", "512"),)
    assert data.tradeoff_note == "drawn: image_size=512 (first of 2; the others are not shown)"


def test_tradeoff_figure_panels(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    data = rp.plot_data(results(tradeoff()))
    fig = rp._draw_tradeoff(data, rp.mode_colours(data.modes))
    assert fig is not None
    try:
        shipped, fallbacks, cache = fig.axes
        assert shipped.get_ylabel() == "bytes shipped (MiB)"
        assert fallbacks.get_ylabel() == "fallbacks (resends)" and cache.get_ylabel() == "engine cache (MiB)"
        assert [t.get_text() for t in fallbacks.get_xticklabels()] == ["0", "0.05", "0.1", "1"]
        ys = {round(float(line.get_ydata()[0]), 1) for line in shipped.get_lines()}
        assert round(data.tradeoff.full_bytes_shipped / MIB, 1) in ys  # type: ignore[union-attr,operator]
        assert round(data.tradeoff.ideal_bytes_shipped / MIB, 1) in ys  # type: ignore[union-attr,operator]
        colours = {to_hex(line.get_color()) for line in shipped.get_lines()}
        assert {to_hex(rp.MODE_COLOURS[m]) for m in ("hash-only", "ephemeral+hash-only")} <= colours
    finally:
        plt.close(fig)
    names = [p.name for p in rp.plot_results(results(tradeoff()), tmp_path)]
    assert "engine-cache.png" in names and "memory-timeline.png" not in names


def test_only_tradeoff_points_in_another_combination_still_plot(tmp_path: Path) -> None:
    """A full-mode point at one cache size and the trade-off at others: nothing is refused."""
    points = [rec("full", 8, engine_cache_gb=4.0), *tradeoff()]
    names = [p.name for p in rp.plot_results(results(points), tmp_path)]
    assert "engine-cache.png" in names


def test_tradeoff_of_one_config_is_not_drawn_with_one_cache_size() -> None:
    only = [r for r in tradeoff() if r.config.engine_cache_gb == 1.0]
    assert rp.plot_data(results(only)).tradeoff is None


def test_the_config_helper_matches_the_records() -> None:
    r = tradeoff()[0]
    assert r.config == PointConfig(mode="hash-only", rollouts=8, turns=4, engine_cache_gb=0.0)
