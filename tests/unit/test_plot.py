"""The plot reporter on hand-made results: the series fed to each axis, then the files written."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from PIL import Image

from mmbench.analysis.fits import mode_fits
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.reporters import plot as rp
from mmbench.results import PointRecord, ResultsFile
from mmbench.units import GIB, MIB
from tests.helpers import flat_record

ENV = {"cpu_model": "Test CPU", "cpu_count": 4, "memory_total_bytes": 16 * GIB}
TURNS = 4


def rec(
    mode: str, k: int, repeat: int = 0, status: str = "ok", bump: int = 0,
    figures: dict[str, Any] | None = None, **kw: Any,
) -> PointRecord:  # fmt: skip
    """A point whose figures follow K: live = K x 100 MiB (+ bump), raw = live + 50 MiB, ...;
    `figures`: more of them, by their v5 flat names (tests.helpers.flat_record)."""
    config = PointConfig(mode=mode, rollouts=k, turns=TURNS, **kw)
    live = k * 100 * MIB + bump
    per_turn = [k * (t + 1) * MIB for t in range(TURNS)]
    measured: dict[str, Any] = {
        "retained_live_bytes": live,
        "retained_bytes": live + 50 * MIB,
        "peak_bytes": 2 * live,
        "bytes_shipped": sum(per_turn) + bump,
        "bytes_per_turn": per_turn,
    }
    if status not in ("ok", "extrapolated"):
        measured = {"cause": "exit code 1"}
    elif status == "extrapolated":
        measured["bytes_per_turn"] = []
    return flat_record(
        **config.to_dict(),
        repeat=repeat,
        status=status,
        predicted_retained_bytes=k * 100 * MIB + MIB,
        predicted_bytes_shipped=k * 10 * MIB,
        **{**measured, **(figures or {})},
    )


def per_turn(r: PointRecord, values: list[int]) -> PointRecord:
    return replace(r, traffic=replace(r.traffic, bytes_per_turn=values))


def results(points: list[PointRecord], name: str = "unit") -> ResultsFile:
    return ResultsFile(environment=dict(ENV), scenario={"name": name}, points=points)


def standard() -> ResultsFile:
    """full and hash-only at K 1, 2, 4; full K=4 three times (a spread); full K=8 extrapolated;
    hash-only K=8 failed."""
    points = [rec(m, k) for m in ("full", "hash-only") for k in (1, 2)]
    points += [rec("full", 4, r, bump=b) for r, b in enumerate((0, 30 * MIB, -10 * MIB))]
    points += [
        rec("hash-only", 4),
        rec("full", 8, status="extrapolated"),
        rec("hash-only", 8, status="failed"),
    ]
    return results(points)


def by_mode(series: list[Any]) -> dict[str, Any]:
    return {s.mode: s for s in series}


# --- the series ----------------------------------------------------------------------------------


def test_retained_series_medians_ranges_raw_extrapolated_and_prediction() -> None:
    full = by_mode(rp.plot_data(standard()).retained)["full"]
    assert full.k == [1, 2, 4]
    assert [s.median * GIB for s in full.live] == [100 * MIB, 200 * MIB, 400 * MIB]
    assert (full.live[2].lo * GIB, full.live[2].hi * GIB, full.live[2].n) == (390 * MIB, 430 * MIB, 3)
    assert full.raw_k == [1, 2, 4, 4, 4]  # every ok repeat, none of the extrapolated
    assert full.raw[3] * GIB == 400 * MIB + 30 * MIB + 50 * MIB
    assert (full.extrapolated_k, [v * GIB for v in full.extrapolated]) == ([8], [800 * MIB])
    assert full.predicted_k == [1, 2, 4, 8]  # the model line reaches the extrapolated K
    assert full.predicted[-1] * GIB == 801 * MIB


def test_retained_fit_is_analysis_mode_fits_over_its_own_k_range() -> None:
    data = standard()
    full = by_mode(rp.plot_data(data).retained)["full"]
    fit = {f.mode: f for f in mode_fits(data.points)}["full"]
    assert full.fit_k == [fit.k_from, 4.0]
    assert full.fit == pytest.approx([fit.fit.at(x) / GIB for x in full.fit_k])


def test_failed_points_are_left_out_everywhere() -> None:
    data = rp.plot_data(standard())
    hash_only = by_mode(data.retained)["hash-only"]
    assert hash_only.k == [1, 2, 4] and hash_only.extrapolated_k == []
    assert hash_only.predicted_k == [1, 2, 4]
    assert by_mode(data.peak)["hash-only"].k == [1, 2, 4]


def test_shipped_per_rollout_at_each_modes_largest_measured_k() -> None:
    bars = by_mode(rp.plot_data(standard()).shipped)
    # full K=8 is extrapolated, not measured: its bar is at K=4, the median of three repeats
    assert bars["full"].k == 4
    base = sum(4 * (t + 1) * MIB for t in range(TURNS))
    assert bars["full"].per_rollout.median * MIB == pytest.approx(base / 4)
    assert bars["full"].per_rollout.lo * MIB == pytest.approx((base - 10 * MIB) / 4)
    assert bars["full"].per_rollout.hi * MIB == pytest.approx((base + 30 * MIB) / 4)
    assert bars["full"].predicted == pytest.approx(10.0)  # 4 x 10 MiB predicted / 4 rollouts


def test_shipped_per_turn_is_per_rollout_mib_at_the_largest_k() -> None:
    turns = by_mode(rp.plot_data(standard()).per_turn)
    for mode in ("full", "hash-only"):
        assert turns[mode].k == 4
        assert turns[mode].turns == [1, 2, 3, 4]
        assert turns[mode].per_rollout == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_per_turn_takes_the_median_over_repeats() -> None:
    points = [rec("full", 2, r) for r in range(3)]
    points = [
        per_turn(p, [v * MIB for v in vals])
        for p, vals in zip(points, ([2, 4], [6, 8], [4, 100]), strict=True)
    ]
    (series,) = rp.plot_data(results(points)).per_turn
    assert series.per_rollout == pytest.approx([2.0, 4.0])  # medians 4 and 8 MiB over K=2


def test_peak_series_pairs_peak_with_raw_and_live_retained() -> None:
    full = by_mode(rp.plot_data(standard()).peak)["full"]
    assert full.k == [1, 2, 4]
    assert [p * GIB for p in full.peak] == pytest.approx([200 * MIB, 400 * MIB, 800 * MIB])
    assert [r * GIB for r in full.retained] == pytest.approx([150 * MIB, 250 * MIB, 450 * MIB])
    assert [v * GIB for v in full.live] == pytest.approx([100 * MIB, 200 * MIB, 400 * MIB])


def test_modes_in_registry_order_with_fixed_colours() -> None:
    data = results([rec("hash-only", 1), rec("ephemeral", 1), rec("full", 1)])
    assert rp.plot_data(data).modes == ["full", "ephemeral", "hash-only"]
    colours = rp.mode_colours(["ephemeral+hash-only", "raw-file", "full", "ephemeral", "hash-only", "raw"])
    assert colours == rp.MODE_COLOURS
    assert len(set(colours.values())) == 6


def test_other_modes_take_the_next_colours_whatever_else_is_in_the_file() -> None:
    alone = rp.mode_colours(["zeta"])
    assert alone["zeta"] in rp.EXTRA_COLOURS
    assert rp.mode_colours(["full", "alpha", "zeta"])["zeta"] != rp.mode_colours(["full", "alpha"])["alpha"]
    assert rp.mode_colours(["full", "zeta"])["full"] == rp.MODE_COLOURS["full"]


def test_title_names_scenario_and_machine() -> None:
    data = rp.plot_data(standard())
    assert data.scenario == "unit"
    assert data.machine == "Test CPU, 4 CPUs, 16.0 GiB RAM"
    assert data.setting == "qwen3-vl, 512x512 images, 4 turns, 1 image/turn"
    assert data.note is None
    assert rp.plot_data(ResultsFile({}, {}, [rec("full", 1)])).machine == "machine unknown"


def test_several_image_sizes_draw_the_first_and_say_so() -> None:
    points = [rec("full", 1, image_size="512"), rec("full", 2, image_size="512")]
    points += [rec("full", 1, image_size="1024", bump=MIB), rec("full", 4, image_size="1024")]
    data = rp.plot_data(results(points))
    assert data.retained[0].k == [1, 2]
    assert data.note is not None and "image_size=512" in data.note and "2 combinations" in data.note
    assert "1024" not in data.setting


def test_a_combination_without_drawable_points_is_passed_over() -> None:
    points = [rec("full", 1, status="failed", image_size="256"), rec("full", 1, image_size="512")]
    data = rp.plot_data(results(points))
    assert data.note is None and "512x512" in data.setting
    assert data.retained[0].k == [1]


def test_only_extrapolated_points_still_draw_retained_only() -> None:
    data = rp.plot_data(results([rec("full", 8, status="extrapolated")]))
    assert [s.extrapolated_k for s in data.retained] == [[8]]
    assert (data.shipped, data.per_turn, data.peak) == ([], [], [])


def test_no_ok_or_extrapolated_points_is_empty() -> None:
    assert rp.plot_data(results([rec("full", 1, status="failed"), rec("full", 2, status="skipped")])).empty
    assert rp.plot_data(results([])).empty


# --- drawing and files ---------------------------------------------------------------------------


def test_matplotlib_runs_on_agg() -> None:
    assert matplotlib.get_backend().lower() == "agg"


def test_agg_is_chosen_by_importing_the_reporter_even_with_a_display_backend_asked_for() -> None:
    code = "import mmbench.reporters.plot, matplotlib; print(matplotlib.get_backend())"
    env = {**os.environ, "MPLBACKEND": "TkAgg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().lower() == "agg"


def test_only_the_plot_reporter_imports_matplotlib() -> None:
    root = Path(rp.__file__).parents[1]
    imports = re.compile(r"^\s*(import|from)\s+matplotlib\b", re.MULTILINE)
    users = [p.relative_to(root) for p in root.rglob("*.py") if imports.search(p.read_text())]
    assert users == [Path("reporters/plot.py")]


NAMES = ["retained-vs-k", "shipped-per-rollout", "shipped-per-turn", "peak-vs-retained"]


def test_png_files_are_valid_and_the_size_of_a_pr_comment(tmp_path: Path) -> None:
    paths = rp.plot_results(standard(), tmp_path / "plots")
    assert [p.name for p in paths] == [f"{n}.png" for n in NAMES]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size == (900, 550)
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)


def test_svg_files_are_valid_and_reproducible(tmp_path: Path) -> None:
    first = rp.plot_results(standard(), tmp_path / "a", "svg")
    second = rp.plot_results(standard(), tmp_path / "b", "svg")
    assert [p.name for p in first] == [f"{n}.svg" for n in NAMES]
    for a, b in zip(first, second, strict=True):
        text = a.read_text()
        assert text.startswith(("<?xml", "<svg")) and "</svg>" in text
        assert text == b.read_text()  # no date, stable ids: re-plotting does not churn a diff


def test_figures_are_closed_after_saving(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    rp.plot_results(standard(), tmp_path)
    assert len(plt.get_fignums()) == before


def test_a_figure_without_data_is_not_written(tmp_path: Path) -> None:
    points = [per_turn(p, []) for p in standard().points]
    names = [p.name for p in rp.plot_results(results(points), tmp_path)]
    assert "shipped-per-turn.png" not in names and len(names) == 3
    assert not (tmp_path / "shipped-per-turn.png").exists()


def test_nothing_to_draw_raises_and_writes_nothing(tmp_path: Path) -> None:
    bad = results([rec("full", 1, status="failed"), rec("full", 2, status="skipped")])
    with pytest.raises(
        MmbenchError, match=r"no measured points to plot in here \(points: 1 failed, 1 skipped\)"
    ):
        rp.plot_results(bad, tmp_path / "plots", where="here")
    assert not (tmp_path / "plots").exists()


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(MmbenchError, match="unknown format 'jpg'; choose one of: png, svg"):
        rp.plot_results(standard(), tmp_path / "plots", "jpg")
    assert not (tmp_path / "plots").exists()


def test_an_unwritable_out_dir_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(MmbenchError, match="cannot create the plot directory"):
        rp.plot_results(standard(), tmp_path / "file" / "plots")


def test_each_mode_keeps_its_colour_in_every_figure() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    data = rp.plot_data(standard())
    want = {to_hex(rp.MODE_COLOURS[m]) for m in data.modes}
    for name, fig in rp.figures(data):
        try:
            drawn = {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()}
            drawn |= {to_hex(p.get_facecolor()) for ax in fig.axes for p in ax.patches}
            assert want <= drawn, name
        finally:
            plt.close(fig)


def _axes_scales(data: rp.PlotData, name: str) -> set[tuple[str, str]]:
    drawn = dict(rp.figures(data))
    fig = drawn[name]
    scales = {(ax.get_xscale(), ax.get_yscale()) for ax in fig.axes if ax.get_visible()}
    for f in drawn.values():
        matplotlib.pyplot.close(f)
    return scales


def test_a_log_k_axis_comes_with_a_log_memory_axis() -> None:
    """K = 4..256 spans 64x: K goes logarithmic, and memory with it, so that growth linear in K is a
    straight line (slope 1) and not the explosion a log-linear plot would draw."""
    wide = rp.plot_data(results([rec("full", k) for k in (4, 8, 16, 64, 256)]))
    assert _axes_scales(wide, "retained-vs-k") == {("log", "log")}
    assert _axes_scales(wide, "peak-vs-retained") == {("log", "log")}
    narrow = rp.plot_data(results([rec("full", k) for k in (1, 2, 4, 8)]))
    assert _axes_scales(narrow, "retained-vs-k") == {("linear", "linear")}


def test_the_modes_figure_sets_client_beside_engine_at_each_modes_largest_k() -> None:
    points = []
    for mode, cpu in (("full", 2.0), ("raw", 1.0)):
        for k in (1, 2):
            points.append(
                rec(mode, k, figures=dict(
                    client_cpu_s=cpu * k, engine_cpu_s=3.0 * k, engine_rss_baseline_bytes=100 * MIB,
                    engine_rss_bytes=100 * MIB + k * GIB, engine_peak_rss_bytes=100 * MIB + 2 * k * GIB,
                ))
            )  # fmt: skip
    data = rp.plot_data(results(points))
    full, raw = data.costs
    assert (full.mode, full.k, raw.mode) == ("full", 2, "raw")
    assert full.client_retained == pytest.approx(200 * MIB / GIB)
    assert (full.engine_retained, full.engine_peak) == (pytest.approx(2.0), pytest.approx(4.0))
    assert (full.client_cpu_per_rollout, raw.client_cpu_per_rollout) == (2.0, 1.0)
    assert full.engine_cpu_per_rollout == 3.0
    assert full.shipped_per_rollout == pytest.approx(sum(2 * (t + 1) for t in range(TURNS)) / 2)
    assert "modes" in dict(rp.figures(data))
    assert "modes" not in dict(rp.figures(rp.plot_data(standard())))  # no time readings: no figure
