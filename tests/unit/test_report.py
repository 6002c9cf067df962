"""mmbench.analysis.report and its renderers on a hand-made results file: the pull request's table, the
reduction factors and slopes by hand, statuses, sections, and the golden markdown and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mmbench.analysis.report import build_report
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.reporters.markdown import render_csv, render_json, render_markdown
from mmbench.reporters.report_table import report_tables
from mmbench.results import PointRecord, ResultsFile
from mmbench.units import GIB, MIB
from tests.helpers import flat_record

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"

ENVIRONMENT: dict[str, Any] = {
    "cpu_count": 8,
    "cpu_model": "Test CPU",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "memory_total_bytes": 64 * GIB,
    "mmbench": "0.1.0",
    "timestamp_utc": "2026-01-02T03:04:05Z",
}
SCENARIO: dict[str, Any] = {"name": "golden", "description": "two modes, K = 2, 4, 8, two repeats"}

# retained (live) per repeat, MiB. Medians: full 200, 428, 800 (100 K + 28 at K=4 only, so that the
# fit is not exact); ephemeral 40, 50, 70 (5 K + 30).
LIVE_MIB = {
    ("full", 2): (190, 210),
    ("full", 4): (420, 436),
    ("full", 8): (790, 810),
    ("ephemeral", 2): (39, 41),
    ("ephemeral", 4): (49, 51),
    ("ephemeral", 8): (69, 71),
}
EXTRAPOLATED_MIB = {"full": 6400, "ephemeral": 350}
EXTRAPOLATED_K = 64
# cache_full_k = ceil(pool_size * image_cache_max / (turns * images_per_turn)) = 2: every K is fitted.
BASE: dict[str, Any] = {"turns": 8, "image_cache_max": 16}


def measured(
    mode: str, k: int, repeat: int, live_mib: float, extra: dict[str, Any] | None = None, **point: Any
) -> PointRecord:
    """A measured point; `extra`: other figures, by their v5 flat names (tests.helpers.flat_record)."""
    live = int(live_mib * MIB)
    figures: dict[str, Any] = dict(
        peak_method="vmhwm",
        retained_live_bytes=live,
        retained_bytes=live + 100 * MIB,  # raw: 100 MiB of allocator retention everywhere
        peak_bytes=2 * live + 50 * MIB,
        bytes_shipped=k * 300 * MIB,
        retained_ratio=(0.99, 1.01)[repeat],
        shipped_ratio=1.0,
        # memray only on full at the largest K: the heap column shows "-" for the other mode.
        memray_peak_bytes=(2 * live + 50 * MIB) - 64 * MIB if (mode, k) == ("full", 8) else None,
    )
    config = PointConfig(mode=mode, rollouts=k, **(BASE | point)).to_dict()
    return flat_record(**config, repeat=repeat, status="ok", **{**figures, **(extra or {})})


def extrapolated(mode: str, mib: float, **point: Any) -> PointRecord:
    return flat_record(
        **PointConfig(mode=mode, rollouts=EXTRAPOLATED_K, **(BASE | point)).to_dict(),
        status="extrapolated",
        cause="predicted peak 40.0 GiB above the memory available; extrapolated from K=2,4,8 (R²=0.9973)",
        retained_live_bytes=int(mib * MIB),
        retained_bytes=int(mib * MIB) + 100 * MIB,
    )


def sample_records(scale: float = 1.0, **point: Any) -> list[PointRecord]:
    records = [
        measured(mode, k, repeat, values[repeat] * scale, **point)
        for (mode, k), values in LIVE_MIB.items()
        for repeat in (0, 1)
    ]
    return records + [extrapolated(m, v * scale, **point) for m, v in EXTRAPOLATED_MIB.items()]


def sample_results(records: list[PointRecord] | None = None) -> ResultsFile:
    return ResultsFile(
        dict(ENVIRONMENT), dict(SCENARIO), records if records is not None else sample_records()
    )


def check_golden(name: str, produced: str) -> None:
    """To regenerate after an intended change: MMBENCH_UPDATE_GOLDEN=1 pytest this file, then
    read the diff."""
    path = GOLDEN_DIR / name
    if os.environ.get("MMBENCH_UPDATE_GOLDEN") == "1":
        path.write_bytes(produced.encode())
    assert produced.encode() == path.read_bytes()


# --- the table ---


def test_one_row_per_k_and_full_first() -> None:
    (section,) = build_report(sample_results()).sections
    assert section.params == ()
    assert section.modes == ("full", "ephemeral")
    assert [r.rollouts for r in section.rows] == [2, 4, 8, EXTRAPOLATED_K]


def test_cells_are_median_min_max_over_repeats() -> None:
    (section,) = build_report(sample_results()).sections
    full = section.rows[2].cells[0]
    assert full is not None and full.value is not None
    assert (full.value.median, full.value.lo, full.value.hi, full.value.n) == (
        800 * MIB,
        790 * MIB,
        810 * MIB,
        2,
    )
    assert full.status == "ok" and full.repeats == 2 and not full.incomplete


def test_reduction_factor_is_full_median_over_mode_median() -> None:
    (section,) = build_report(sample_results()).sections
    reductions = [row.cells[1].reduction for row in section.rows]  # type: ignore[union-attr]
    assert reductions == pytest.approx([200 / 40, 428 / 50, 800 / 70, 6400 / 350])
    assert all(row.cells[0].reduction is None for row in section.rows)  # type: ignore[union-attr]


def test_extrapolated_row_is_flagged_and_keeps_its_values() -> None:
    (section,) = build_report(sample_results()).sections
    *measured_rows, last = section.rows
    assert last.extrapolated and not any(r.extrapolated for r in measured_rows)
    cell = last.cells[1]
    assert cell is not None and cell.status == "extrapolated" and cell.value is not None
    assert cell.value.median == 350 * MIB


# --- the per-mode summary ---


def test_slopes_by_hand() -> None:
    """full: y = 200, 428, 800 MiB at K = 2, 4, 8. With mean K 14/3 and Sxx = 56/3, a bump e at
    K=4 on 100 K gives slope 100 - e/28 = 99, intercept 476 - 99 * 14/3 = 14; residuals -12, 18,
    -6 against a total sum of squares 183456. The extrapolated K=64 row is not evidence and is not
    fitted (with it the slope would be ~100)."""
    full, eph = build_report(sample_results()).sections[0].summaries
    assert full.fit is not None and eph.fit is not None
    assert full.fit.slope == pytest.approx(99 * MIB)
    assert full.fit.intercept == pytest.approx(14 * MIB)
    assert full.fit.r2 == pytest.approx(1 - 504 / 183456)
    assert (full.fit_k_from, full.fit.n) == (2, 3)
    assert eph.fit.slope == pytest.approx(5 * MIB)
    assert eph.fit.intercept == pytest.approx(30 * MIB)
    assert eph.fit.r2 == pytest.approx(1.0)


def test_summary_reads_the_largest_measured_k() -> None:
    full, eph = build_report(sample_results()).sections[0].summaries
    assert full.largest_k == 8  # not the extrapolated 64
    assert full.retained is not None and full.retained.median == 800 * MIB
    assert full.peak is not None and full.peak.median == 2 * 800 * MIB + 50 * MIB
    assert full.heap_peak is not None and full.heap_gap == 64 * MIB
    assert eph.heap_peak is None and eph.heap_gap is None
    assert full.shipped_per_rollout is not None and full.shipped_per_rollout.median == 300 * MIB
    assert full.retained_ratio is not None
    assert (full.retained_ratio.median, full.retained_ratio.lo, full.retained_ratio.hi) == (1.0, 0.99, 1.01)


def test_fit_starts_at_the_cache_full_k() -> None:
    """image_cache_max 32 over 8 images per rollout fills the cache at K=4: K=1 is left out."""
    records = [
        measured("ephemeral", k, 0, mib, image_cache_max=32)
        for k, mib in ((1, 500), (4, 400), (8, 800), (16, 1600))
    ]
    (summary,) = build_report(sample_results(records)).sections[0].summaries
    assert summary.fit is not None and summary.fit_k_from == 4
    assert summary.fit.slope == pytest.approx(100 * MIB)
    assert summary.fit.intercept == pytest.approx(0.0, abs=1)


def test_raw_metric_reads_retained_bytes() -> None:
    report = build_report(sample_results(), "raw")
    assert report.metric_field == "client.retained_bytes"
    section = report.sections[0]
    full = section.rows[0].cells[0]
    assert full is not None and full.value is not None and full.value.median == 300 * MIB
    fit = section.summaries[0].fit
    assert fit is not None
    assert fit.slope == pytest.approx(99 * MIB) and fit.intercept == pytest.approx(114 * MIB)
    assert "retained memory (raw)" in render_markdown(report)


# --- statuses, sections, bad input ---


def test_failed_and_skipped_cells_carry_their_status() -> None:
    full_point = PointConfig(mode="full", rollouts=16, **BASE).to_dict()
    eph_point = PointConfig(mode="ephemeral", rollouts=16, **BASE).to_dict()
    records = [
        *sample_records(),
        flat_record(**full_point, status="failed", cause="signal 9"),
        flat_record(**eph_point, status="skipped", cause="too big"),
    ]
    report = build_report(sample_results(records))
    row = next(r for r in report.sections[0].rows if r.rollouts == 16)
    full, eph = row.cells
    assert full is not None and eph is not None
    assert (full.status, full.value, full.cause) == ("failed", None, "signal 9")
    assert (eph.status, eph.value, eph.reduction) == ("skipped", None, None)
    md = render_markdown(report)
    assert "| 16 | failed | skipped | - |" in md
    assert "K=16 full failed: signal 9" in md


def test_a_failed_repeat_is_left_out_and_marked() -> None:
    records = [r for r in sample_records() if (r.config.mode, r.config.rollouts, r.repeat) != ("full", 2, 1)]
    failed = flat_record(**PointConfig(mode="full", rollouts=2, **BASE).to_dict(), repeat=1, status="failed")
    report = build_report(sample_results([*records, failed]))
    cell = report.sections[0].rows[0].cells[0]
    assert cell is not None and cell.value is not None
    assert (cell.status, cell.value.n, cell.repeats, cell.incomplete) == ("ok", 1, 2, True)
    assert cell.value.median == 190 * MIB
    assert "| 2 | 0.19‡ |" in render_markdown(report)


def test_one_section_per_combination_of_the_other_parameters() -> None:
    records = sample_records() + sample_records(scale=4.0, image_size="1024")
    report = build_report(sample_results(records))
    assert [s.title for s in report.sections] == ["image_size=512", "image_size=1024"]
    assert ("image_size", "512") not in report.fixed
    slopes = [s.summaries[0].fit.slope for s in report.sections]  # type: ignore[union-attr]
    assert slopes == pytest.approx([99 * MIB, 4 * 99 * MIB])  # fitted apart, not blended
    md = render_markdown(report)
    assert "### image_size=512: Retained memory (live)" in md
    assert "### image_size=1024: Retained memory (live)" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["image_size"] for r in rows} == {"512", "1024"}


def test_without_full_there_are_no_reductions() -> None:
    records = [r for r in sample_records() if r.config.mode != "full"]
    report = build_report(sample_results(records))
    assert all(c is not None and c.reduction is None for row in report.sections[0].rows for c in row.cells)
    assert "vs full" not in render_markdown(report)


def test_unknown_metric_lists_the_valid_ones() -> None:
    with pytest.raises(MmbenchError, match="unknown metric 'peak'; choose one of: live, raw"):
        build_report(sample_results(), "peak")


def test_no_ok_or_extrapolated_point_is_an_error() -> None:
    records = [replace(r, status="failed") for r in sample_records()[:3]]
    with pytest.raises(MmbenchError, match=r"no ok or extrapolated points .*3 failed, 0 skipped"):
        build_report(sample_results(records))


# --- renderers ---


def test_markdown_golden() -> None:
    check_golden("report.md", render_markdown(build_report(sample_results())))


def test_csv_golden() -> None:
    check_golden("report.csv", render_csv(build_report(sample_results())))


def test_markdown_shows_the_figures() -> None:
    md = render_markdown(build_report(sample_results()))
    assert md.startswith(
        "## mmbench report: golden on Test CPU, 8 CPUs, 64.0 GiB RAM — retained memory (live)"
    )
    assert "| 8 | 0.78 (0.77–0.79) | 0.07 | ×11.4 |" in md
    assert f"| {EXTRAPOLATED_K}† | *6.25*† | *0.34*† | *×18.3*† |" in md
    assert "† extrapolated, not measured" in md
    assert "| full | 99.0 | 0.9973 | 14.0 | 2–8 (3) |" in md
    assert "RSS − heap" in md and "fragmentation" in md
    assert md.endswith("2026-01-02T03:04:05Z)._\n")


def test_csv_one_row_per_cell_in_bytes() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(build_report(sample_results())))))
    assert len(rows) == 8
    row = next(r for r in rows if (r["mode"], r["rollouts"]) == ("ephemeral", "8"))
    assert int(row["median_bytes"]) == 70 * MIB
    assert (int(row["min_bytes"]), int(row["max_bytes"])) == (69 * MIB, 71 * MIB)
    assert float(row["reduction_vs_full"]) == pytest.approx(800 / 70, abs=1e-4)
    assert row["status"] == "ok" and row["n"] == "2" and row["metric"] == "live"
    assert [r["status"] for r in rows if r["rollouts"] == str(EXTRAPOLATED_K)] == ["extrapolated"] * 2


def test_json_is_sorted_and_complete() -> None:
    text = render_json(build_report(sample_results()))
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["metric"] == "live" and data["fixed"]["turns"] == 8
    section = data["sections"][0]
    assert section["params"] == {} and len(section["rows"]) == 4
    assert section["summaries"][0]["fit"]["slope"] == pytest.approx(99 * MIB)


def test_output_is_deterministic() -> None:
    a, b = build_report(sample_results()), build_report(sample_results())
    for render in (render_markdown, render_csv, render_json):
        assert render(a) == render(b)


def test_terminal_tables_say_what_the_markdown_says() -> None:
    console = Console(width=200, record=True)
    for table in report_tables(build_report(sample_results())):
        console.print(table)
    text = console.export_text()
    for expected in ("golden on Test CPU", "0.78 (0.77–0.79)", "×11.4", "×18.3†", "64†", "99.0", "2–8 (3)"):
        assert expected in text, expected
    assert "† extrapolated, not measured" in text


def test_while_the_cache_fills_the_slope_is_compared_with_the_models() -> None:
    """ephemeral with a 32-image cache and 8 images per rollout: K = 1, 2 never fill it, so each more
    rollout also adds to the cache; the floor (one rollout's own data) does not apply, the model does."""
    from mmbench.analysis.fits import mode_fits

    def point(k: int, mode: str = "ephemeral") -> PointRecord:
        held = {"source_bytes": int(4 * MIB * k), "descriptor_bytes": int(0.5 * MIB * k),
                "other_bytes": int(0.5 * MIB * k)}  # fmt: skip
        return measured(
            mode, k, 0, 60 * k, {"predicted_retained_bytes": int(50 * MIB * k), **held}, image_cache_max=32
        )

    (fit,) = mode_fits([point(1), point(2)])
    assert not fit.cache_full
    assert fit.floor_per_rollout == pytest.approx(5 * MIB)
    assert fit.model_slope == pytest.approx(50 * MIB)
    assert fit.expected == (fit.model_slope, "model")
    assert fit.vs_expected == pytest.approx(60 / 50)  # not 60 / 5: the cache is still filling
    (full,) = mode_fits([point(k, "full") for k in (1, 2)])
    assert full.cache_full and full.expected[1] == "floor"


def test_models_side_by_side_where_the_results_span_several_models() -> None:
    records = sample_records(model="qwen3-vl") + sample_records(scale=0.5, model="kimi-k2.5")
    report = build_report(sample_results(records))
    rows = {(r.mode, r.model): r for r in report.models}
    assert list(rows) == [("full", "qwen3-vl"), ("full", "kimi-k2.5"), ("ephemeral", "qwen3-vl"),
                          ("ephemeral", "kimi-k2.5")]  # fmt: skip
    for mode in ("full", "ephemeral"):
        assert rows[mode, "kimi-k2.5"].slope == pytest.approx(rows[mode, "qwen3-vl"].slope / 2)
    assert rows["full", "qwen3-vl"].pixel_bytes_per_image == 6_291_456  # 512x512
    assert rows["full", "kimi-k2.5"].pixel_bytes_per_image == 3_396_288  # (1444, 3, 14, 14)
    assert rows["full", "qwen3-vl"].shipped_per_rollout == 300 * MIB
    assert "Models: each mode's retained slope" in render_markdown(report)
    assert build_report(sample_results()).models == ()  # one model: no such table
