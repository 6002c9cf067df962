"""The whole-system lines of `mmbench report`: the system total per mode, the ledger at the largest
K, the engine-cache trade-off; in markdown (golden), the terminal tables and JSON. Results without
the engine's baseline (older files) show none of them: tests/golden/report.md does not move."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from rich.console import Console

from mmbench.analysis.report import build_report
from mmbench.record import Accounting
from mmbench.reporters.markdown import render_json, render_markdown
from mmbench.reporters.report_table import per_mode_table, report_tables
from mmbench.results import PointRecord
from mmbench.units import MIB
from tests.unit.test_report import check_golden, measured, sample_records, sample_results

# Per mode at every K: client data = 100 MiB per rollout of pixels (full, hash-only alike), the
# engine holds each distinct image once (100 MiB per rollout) plus 20 MiB of its own.
ENGINE_BASELINE = 50 * MIB


def with_ledger(r: PointRecord, engine_extra_mib: float = 20) -> PointRecord:
    k, live = r.config.rollouts, r.client.retained_live_bytes or 0
    held = Accounting(
        stored_pixel_bytes=live - 2 * MIB,
        source_bytes=MIB,
        descriptor_bytes=MIB // 2,
        other_bytes=MIB // 2,
        renderer_cache_only_bytes=0,
        live_data_bytes=live,
    )
    engine = replace(
        r.engine.figures,
        cache_bytes=k * 100 * MIB,
        rss_baseline_bytes=ENGINE_BASELINE,
        rss_bytes=ENGINE_BASELINE + k * 100 * MIB + int(engine_extra_mib * MIB),
        peak_rss_bytes=ENGINE_BASELINE + k * 150 * MIB,
    )
    return replace(r, client=replace(r.client, accounting=held), engine=replace(r.engine, figures=engine))


def ledger_records() -> list[PointRecord]:
    """The golden records (full and ephemeral, K = 2, 4, 8, two repeats) with the engine's figures;
    ephemeral's engine keeps 60 MiB more (its allocator)."""
    out = []
    for r in sample_records():
        if r.status != "ok":
            out.append(r)
            continue
        out.append(with_ledger(r, 20 if r.config.mode == "full" else 80))
    return out


def test_old_results_have_no_system_lines() -> None:
    report = build_report(sample_results())
    assert not report.has_system_total and report.cache_tradeoffs == ()
    text = render_markdown(report)
    assert "Memory, bytes and time per mode" not in text and "Ledger" not in text


def test_system_total_is_client_metric_plus_engine_above_baseline_at_the_largest_k() -> None:
    full, eph = build_report(sample_results(ledger_records())).sections[0].summaries
    # full at K=8: live 790 and 810 MiB, engine 800 + 20 above its baseline
    assert full.engine_above_baseline is not None and full.engine_above_baseline.median == 820 * MIB
    assert full.system_total is not None
    assert (full.system_total.lo, full.system_total.median, full.system_total.hi) == (
        (790 + 820) * MIB, (800 + 820) * MIB, (810 + 820) * MIB,
    )  # fmt: skip
    assert eph.system_total is not None and eph.system_total.median == (70 + 880) * MIB


def test_system_total_follows_the_metric() -> None:
    full = build_report(sample_results(ledger_records()), "raw").sections[0].summaries[0]
    assert full.system_total is not None and full.system_total.median == (900 + 820) * MIB


def test_the_ledger_is_the_median_of_the_repeats_at_the_largest_k() -> None:
    full = build_report(sample_results(ledger_records())).sections[0].summaries[0]
    lg = full.ledger
    assert lg is not None
    assert lg.client_live == 800 * MIB and lg.engine_cache == 800 * MIB
    assert lg.client_check is not None and lg.client_check.ok
    assert lg.engine_check is not None and lg.engine_check.ratio == pytest.approx(800 / 820)


def test_markdown_golden() -> None:
    check_golden("report_ledger.md", render_markdown(build_report(sample_results(ledger_records()))))


def test_markdown_has_a_system_total_line_per_mode_and_the_ledger_checks() -> None:
    text = render_markdown(build_report(sample_results(ledger_records())))
    assert "#### Memory, bytes and time per mode" in text and "#### Ledger at the largest K" in text
    # live, raw, peak, engine above baseline, engine cache, system total, vs full, shipped, time
    full = "| full | 8 | 0.78 (0.77–0.79) | 0.88 (0.87–0.89) | 1.61 (1.59–1.63) | 0.80 | 0.78 |"
    assert full + " 1.58 (1.57–1.59) | - | 300.0 | - | - | - |" in text
    assert (
        "| ephemeral | 8 | 0.07 | 0.17 | 0.19 (0.18–0.19) | 0.86 | 0.78 | 0.93 | ×1.7 | 300.0 | - | - | - |"
        in text
    )
    assert "| check: engine cache / RSS above baseline | 0.976 ✓ | 0.909 ✗ |" in text
    assert "| trajectories: descriptors | 0.5 | 0.5 |" in text


def test_terminal_tables_have_the_same_lines() -> None:
    console = Console(width=200, record=True)
    for table in report_tables(build_report(sample_results(ledger_records()))):
        console.print(table)
    text = console.export_text()
    assert "Memory, bytes and time per mode" in text and "Ledger at the largest K" in text
    assert "0.976 ✓" in text and "0.909 ✗" in text


def test_json_has_the_ledger_with_derived_parts() -> None:
    data = json.loads(render_json(build_report(sample_results(ledger_records()))))
    full = data["sections"][0]["summaries"][0]
    assert full["system_total"]["median"] == (800 + 820) * MIB
    assert full["ledger"]["engine_above_baseline"] == 820 * MIB
    assert full["ledger"]["checks"]["client"]["ok"] is True
    assert data["cache_tradeoffs"] == []


# --- the engine-cache trade-off ---


def tradeoff_records() -> list[PointRecord]:
    out = []
    for mode in ("hash-only", "ephemeral+hash-only"):
        for gb, shipped, fb, cache in ((0.0, 900, 8, 0), (0.1, 300, 2, 100), (1.0, 100, 0, 384)):
            extra: dict[str, Any] = {
                "bytes_shipped": shipped * MIB,
                "fallbacks": fb,
                "engine_cache_bytes": cache * MIB,
                "source_bytes_per_image": 500_000.0,
            }
            out.append(measured(mode, 8, 0, 400, extra, engine_cache_gb=gb))
    return out


def test_tradeoff_table_in_markdown() -> None:
    report = build_report(sample_results(tradeoff_records()))
    (trade,) = report.cache_tradeoffs
    assert trade.modes == ("hash-only", "ephemeral+hash-only") and trade.cache_gb == (0.0, 0.1, 1.0)
    text = render_markdown(report)
    assert "### Engine cache trade-off: the hash-only modes against engine_cache_gb" in text
    ideal = trade.ideal_bytes_shipped
    assert ideal is not None
    row = (
        f"| 0.1 | 300.0 | {300 * MIB / ideal:.2f} | 2 | 100.0 | 300.0 | {300 * MIB / ideal:.2f} | 2 | 100.0 |"
    )
    assert row in text
    assert f"Ideal: {ideal / MIB:,.1f} MiB" in text and "full would ship" in text


def test_tradeoff_table_in_the_terminal_and_json() -> None:
    report = build_report(sample_results(tradeoff_records()))
    console = Console(width=250, record=True)
    for table in report_tables(report):
        console.print(table)
    assert "Engine cache trade-off" in console.export_text()
    data = json.loads(render_json(report))
    (trade,) = data["cache_tradeoffs"]
    assert trade["params"] == {} and trade["cache_gb"] == [0.0, 0.1, 1.0]


def test_a_sweep_ends_with_the_per_mode_table_only_where_it_compares_modes() -> None:
    table = per_mode_table(build_report(sample_results(ledger_records())))
    assert table is not None and table.title == "Memory, bytes and time per mode"
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "full" in text and "ephemeral" in text and "Both sides of each mode's trade" in text
    one_mode = [r for r in ledger_records() if r.config.mode == "full"]
    assert per_mode_table(build_report(sample_results(one_mode))) is None
    two_sizes = ledger_records() + [
        replace(r, config=replace(r.config, image_size="1024")) for r in ledger_records()
    ]
    assert per_mode_table(build_report(sample_results(two_sizes))) is None  # mmbench report has both
    assert per_mode_table(build_report(sample_results(sample_records()))) is None  # no engine figures
