"""compare(): matching, significance, regressions and unusable input, on hand-built results."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from mmbench import results
from mmbench.analysis.compare import Comparison, compare, mann_whitney_p
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.reporters.compare_report import compare_markdown, compare_table
from mmbench.results import PointRecord, ResultsFile
from tests.helpers import flat_record

MIB = 1024**2
KS = (1, 2, 4, 8, 16)


def record(
    live: float,
    mode: str = "full",
    k: int = 1,
    repeat: int = 0,
    status: str = "ok",
    **extra: object,
) -> PointRecord:
    return flat_record(
        **PointConfig(mode=mode, rollouts=k).to_dict(),
        repeat=repeat,
        status=status,
        retained_live_bytes=None if status != "ok" else int(live),
        retained_bytes=None if status != "ok" else int(live * 2),
        peak_bytes=None if status != "ok" else int(live * 3),
        bytes_shipped=None if status != "ok" else int(live * 4),
        **extra,
    )


def rf(*records: PointRecord) -> ResultsFile:
    return ResultsFile({"python": "3.11"}, {"name": "hand-made"}, list(records))


def repeats(values: list[float], **kw: object) -> list[PointRecord]:
    return [record(v, repeat=i, **kw) for i, v in enumerate(values)]  # type: ignore[arg-type]


def line(per_k: float, intercept: float = 20 * MIB, mode: str = "full") -> list[PointRecord]:
    return [record(intercept + per_k * k, mode=mode, k=k) for k in KS]


def run(
    base: ResultsFile, head: ResultsFile, metric: str = "retained", threshold: float = 10.0
) -> Comparison:
    return compare(base, head, metric, threshold)


# --- Mann-Whitney, checked by hand -------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "p"),
    [
        ([1, 2, 3], [4, 5, 6], 2 / 20),  # fully separated 3 vs 3: only U=0 and U=9 as extreme
        ([4, 5, 6], [1, 2, 3], 2 / 20),  # symmetric
        ([1, 2], [3, 4], 2 / 6),
        ([1, 2, 3, 4], [5, 6, 7, 8], 2 / 70),  # the smallest balanced design that reaches p < 0.05
        ([1, 2, 3], [4, 5, 6, 7, 8], 2 / 56),
        ([1, 3, 5], [2, 4, 6], 14 / 20),  # U=3: U<=3 or U>=6 is 14 of the 20 splits
        ([7, 7, 7], [7, 7, 7], 1.0),  # all tied: no evidence at all
        ([5], [6], 1.0),
    ],
)
def test_mann_whitney_exact(a: list[float], b: list[float], p: float) -> None:
    assert mann_whitney_p(a, b) == pytest.approx(p)


def test_mann_whitney_ties_use_midranks() -> None:
    # pooled 1,2,2,3 -> ranks 1, 2.5, 2.5, 4; a={1,2}: U = 0.5. The 6 splits give
    # U = 0.5, 0.5, 2, 2, 3.5, 3.5; as extreme as |U - 2| >= 1.5: 4 of 6
    assert mann_whitney_p([1, 2], [2, 3]) == pytest.approx(4 / 6)


def test_mann_whitney_normal_approximation_for_larger_samples() -> None:
    separated = mann_whitney_p(list(range(10)), list(range(10, 20)))
    assert separated < 0.001
    # U = 45: z = (|45 - 50| - 0.5) / sqrt(100 * 21 / 12) = 0.34 -> p = 0.73
    interleaved = mann_whitney_p(list(range(0, 20, 2)), list(range(1, 20, 2)))
    assert interleaved > 0.5


# --- the acceptance cases ------------------------------------------------------------------------


def test_identical_is_exit_0() -> None:
    base = rf(*line(50 * MIB))
    c = run(base, base)
    assert c.exit_code == 0 and c.regressions == []
    assert len(c.gating_rows) == len(KS)
    assert all(r.change_pct == 0 for r in c.rows)


def test_twenty_percent_more_single_repeat_is_a_regression(tmp_path: Path) -> None:
    results.save(tmp_path / "base", rf(record(100 * MIB)))
    results.save(tmp_path / "head", rf(record(120 * MIB)))
    c = run(results.load(tmp_path / "base"), results.load(tmp_path / "head"))
    assert c.exit_code == 1
    [reg] = c.regressions
    assert reg.change_pct == pytest.approx(20.0)
    assert reg.p_value is None and c.no_repeats


def test_twenty_percent_more_three_repeats_ranges_apart_is_a_regression() -> None:
    base = rf(*repeats([99 * MIB, 100 * MIB, 101 * MIB]))
    head = rf(*repeats([119 * MIB, 120 * MIB, 121 * MIB]))
    c = run(base, head)
    [reg] = c.regressions
    # p = 0.1 alone would not count; ranges that do not overlap do
    assert reg.p_value == pytest.approx(0.1)
    assert reg.ranges_apart and reg.significant
    assert c.exit_code == 1 and not c.no_repeats


def test_noisy_twenty_percent_with_overlapping_ranges_is_not_significant() -> None:
    base = rf(*repeats([90 * MIB, 100 * MIB, 130 * MIB]))
    head = rf(*repeats([110 * MIB, 120 * MIB, 125 * MIB]))
    c = run(base, head)
    [row] = c.rows
    assert row.change_pct == pytest.approx(20.0)
    assert not row.ranges_apart and not row.significant
    assert c.exit_code == 0


def test_mann_whitney_counts_where_ranges_overlap() -> None:
    # 5 vs 5 with one overlapping pair: ranges overlap, but U = 1 gives p = 4/252 < 0.05
    base = rf(*repeats([100 * MIB, 101 * MIB, 102 * MIB, 103 * MIB, 121 * MIB]))
    head = rf(*repeats([120 * MIB, 122 * MIB, 123 * MIB, 124 * MIB, 125 * MIB]))
    [row] = run(base, head).rows
    assert not row.ranges_apart
    assert row.p_value == pytest.approx(4 / 252)
    assert row.significant and row.regression


def test_five_percent_under_a_ten_percent_threshold_passes() -> None:
    base, head = rf(record(100 * MIB)), rf(record(105 * MIB))
    assert run(base, head, threshold=10).exit_code == 0
    assert run(base, head, threshold=4).exit_code == 1


def test_a_decrease_is_never_a_regression() -> None:
    base = rf(*repeats([99 * MIB, 100 * MIB, 101 * MIB]))
    head = rf(*repeats([49 * MIB, 50 * MIB, 51 * MIB]))
    [row] = run(base, head, threshold=0).rows
    assert row.significant and row.change_pct == pytest.approx(-50.0)
    assert not row.regression


@pytest.mark.parametrize(("metric", "factor"), [("retained_raw", 2), ("peak", 3), ("bytes_shipped", 4)])
def test_other_metrics_read_their_field(metric: str, factor: int) -> None:
    base = rf(record(100 * MIB))
    first = base.points[0]
    # only bytes_shipped regresses
    shipped_more = replace(first, traffic=replace(first.traffic, bytes_shipped=999 * MIB))
    c = run(base, rf(shipped_more), metric=metric)
    [row] = c.rows
    assert row.base.value == factor * 100 * MIB
    assert (c.exit_code == 1) == (metric == "bytes_shipped")


# --- slopes --------------------------------------------------------------------------------------


def test_slope_metric_catches_a_slope_regression() -> None:
    base = rf(*line(50 * MIB), *line(5 * MIB, mode="ephemeral"))
    head = rf(*line(60 * MIB), *line(5 * MIB, mode="ephemeral"))
    c = run(base, head, metric="slope")
    assert c.exit_code == 1
    [reg] = c.regressions
    assert reg.kind == "slope" and reg.label == "slope full"
    assert reg.change_pct == pytest.approx(20.0)
    assert {r.kind for r in c.gating_rows} == {"slope"}


def test_slope_ignores_an_offset_that_retained_catches() -> None:
    base = rf(*line(50 * MIB, intercept=20 * MIB))
    head = rf(*line(50 * MIB, intercept=60 * MIB))  # +40 MiB at every K, same per-rollout cost
    assert run(base, head, metric="slope").exit_code == 0
    assert run(base, head, metric="retained").exit_code == 1


def test_retained_shows_slopes_for_information_only() -> None:
    base, head = rf(*line(50 * MIB)), rf(*line(50 * MIB))
    slopes = [r for r in run(base, head).rows if r.kind == "slope"]
    assert len(slopes) == 1 and not slopes[0].gating
    assert slopes[0].base.value == pytest.approx(50 * MIB)


def test_slope_with_repeats_tests_one_fit_per_repeat() -> None:
    def noisy(per_k: float, jitter: list[float]) -> list[PointRecord]:
        return [record(per_k * k + j, k=k, repeat=i) for k in KS for i, j in enumerate(jitter)]

    base = rf(*noisy(50 * MIB, [0, MIB, 2 * MIB]))
    head = rf(*noisy(60 * MIB, [0, MIB, 2 * MIB]))
    [row] = [r for r in run(base, head, metric="slope").rows if r.kind == "slope"]
    assert row.base.n == 3 and row.head.n == 3 and row.ranges_apart and row.regression


def test_slope_needs_two_values_of_k() -> None:
    with pytest.raises(MmbenchError, match="two values of K") as exc:
        run(rf(record(MIB)), rf(record(MIB)), metric="slope")
    assert exc.value.exit_code == 2


# --- what is not compared --------------------------------------------------------------------------


def test_non_ok_and_one_sided_points_are_listed_not_compared() -> None:
    base = rf(record(MIB, k=1), record(MIB, k=2), record(MIB, k=4), record(MIB, k=8))
    head = rf(
        record(MIB, k=1),
        record(0, k=2, status="failed", cause="signal 9"),
        record(0, k=4, status="extrapolated"),
        record(MIB, k=16),
    )
    c = run(base, head)
    assert [r.label for r in c.rows if r.kind == "point"] == ["full K=1"]
    reasons = {n.label: n.reason for n in c.not_compared}
    assert reasons == {
        "full K=2": "head: failed (signal 9)",
        "full K=4": "head: extrapolated",
        "full K=8": "only in base",
        "full K=16": "only in head",
    }


def test_labels_name_the_fields_that_vary() -> None:
    small = flat_record(**PointConfig(image_size="256").to_dict(), retained_live_bytes=MIB)
    base = rf(record(MIB), small)
    c = run(base, base)
    assert sorted(r.label for r in c.rows) == ["full K=1 image_size=256", "full K=1 image_size=512"]


# --- unusable input -------------------------------------------------------------------------------


def test_nothing_in_common_is_exit_2() -> None:
    with pytest.raises(MmbenchError, match="no point in common") as exc:
        run(rf(record(MIB, mode="full")), rf(record(MIB, mode="hash-only")))
    assert exc.value.exit_code == 2


def test_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(MmbenchError) as exc:
        run(rf(record(MIB)), rf(record(MIB)), metric="rss")
    assert exc.value.exit_code == 2
    for name in ("retained", "retained_raw", "peak", "bytes_shipped", "slope"):
        assert name in str(exc.value)


def test_metric_absent_from_both_sides_is_exit_2() -> None:
    bare = rf(flat_record(**PointConfig().to_dict(), retained_live_bytes=MIB))
    with pytest.raises(MmbenchError, match=r"no client\.peak_bytes") as exc:
        run(bare, bare, metric="peak")
    assert exc.value.exit_code == 2


def test_only_failed_shared_points_is_exit_2_not_a_silent_pass() -> None:
    with pytest.raises(MmbenchError, match="head has no"):
        run(rf(record(MIB)), rf(record(0, status="failed", cause="timeout")))


@pytest.mark.parametrize("threshold", [-1.0, math.nan, math.inf])
def test_bad_threshold(threshold: float) -> None:
    with pytest.raises(MmbenchError, match="threshold"):
        run(rf(record(MIB)), rf(record(MIB)), threshold=threshold)


# --- reporters ------------------------------------------------------------------------------------


def test_markdown_has_summary_header_and_verdicts() -> None:
    base = rf(record(100 * MIB, k=1), record(100 * MIB, k=2), record(MIB, k=4))
    head = rf(record(130 * MIB, k=1), record(90 * MIB, k=2), record(0, k=4, status="skipped"))
    text = compare_markdown(run(base, head))
    lines = text.splitlines()
    assert "2 points compared, 1 regression over 10 %" in lines[0]
    assert "no repeats: every change counts" in lines[0]
    assert "| point | base MiB | head MiB | change | p | significant | verdict |" in lines
    assert "| full K=1 | 100.0 | 130.0 | +30.0 % | - | n/a | ❌ |" in lines
    assert "| full K=2 | 100.0 | 90.0 | -10.0 % | - | n/a | ✅ |" in lines
    assert "- full K=4: head: skipped" in lines


def test_markdown_with_repeats_shows_ranges_and_p() -> None:
    base = rf(*repeats([99 * MIB, 100 * MIB, 101 * MIB]))
    head = rf(*repeats([109 * MIB, 120 * MIB, 121 * MIB]))
    text = compare_markdown(run(base, head))
    assert (
        "| full K=1 | 100.0 (99.0–101.0, n=3) | 120.0 (109.0–121.0, n=3) | +20.0 % | 0.100 | yes | ❌ |"
        in text
    )
    assert "no repeats" not in text


def test_rich_table_renders_every_row() -> None:
    base, head = rf(*line(50 * MIB)), rf(*line(60 * MIB))
    console = Console(record=True, width=200)
    console.print(compare_table(run(base, head)))
    out = console.export_text()
    assert "5 points compared, 5 regressions over 10 %" in out
    assert "slope full (per rollout)" in out and "info" in out and "❌" in out
