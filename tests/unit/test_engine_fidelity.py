"""`mmbench fidelity`: the embedded engine's points paired with vLLM's, figures side by side."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mmbench.analysis.engine_fidelity import engine_rows
from mmbench.cli import app
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.reporters.engine_fidelity_report import cell, engine_markdown, process_rows
from mmbench.results import PointRecord, ResultsFile, save
from mmbench.units import MIB
from tests.helpers import flat_record


def point(mode: str, k: int, engine: str, **fields: object) -> PointRecord:
    config = PointConfig(mode=mode, rollouts=k, engine_args="--max-num-seqs 8" if engine == "vllm" else "")
    base = {"engine_rss_baseline_bytes": 40 * MIB, "engine_bytes_received": 1000, "fallbacks": 0}
    return flat_record(**config.to_dict(), engine=engine, **{**base, **fields})


def results(*points: PointRecord) -> ResultsFile:
    return ResultsFile({}, {"name": "t"}, list(points))


def test_points_pair_by_their_parameters_but_vllms_flags_and_figures_compare() -> None:
    embedded = results(point("full", 2, "embedded", engine_rss_bytes=140 * MIB, engine_cache_hits=5),
                       point("full", 4, "embedded", engine_rss_bytes=240 * MIB))  # fmt: skip
    vllm = results(point("full", 2, "vllm", engine_rss_bytes=145 * MIB, engine_cache_hits=0),
                   point("hash-only", 2, "vllm", engine_rss_bytes=145 * MIB))  # fmt: skip
    (row,) = engine_rows(embedded, vllm)
    assert (row.mode, row.rollouts) == ("full", 2)
    assert row.pair("retained") == (100 * MIB, 105 * MIB) and not row.differs("retained")
    assert row.ratio("retained") == pytest.approx(1.05)
    assert row.differs("cache hits") and cell(row, "cache hits") == "5 / 0 !"
    assert not row.differs("bytes received") and cell(row, "bytes received") == "0 / 0"
    assert engine_markdown([row]).startswith("## Engine fidelity")


def test_a_difference_over_ten_percent_is_marked_with_its_ratio() -> None:
    embedded = results(point("raw", 8, "embedded", engine_cpu_s=2.0))
    vllm = results(point("raw", 8, "vllm", engine_cpu_s=3.0))
    (row,) = engine_rows(embedded, vllm)
    assert row.differs("engine cpu s") and cell(row, "engine cpu s") == "2.00 / 3.00 x1.50"


def test_each_vllm_process_kind_shows_what_it_held_above_its_own_baseline() -> None:
    kinds = {"api_server": {"baseline_rss_bytes": 1000 * MIB, "rss_bytes": 1040 * MIB,
                            "peak_rss_bytes": 1200 * MIB, "cpu_s": 2.0},
             "engine_core": {"baseline_rss_bytes": 800 * MIB, "rss_bytes": 980 * MIB,
                             "peak_rss_bytes": 980 * MIB, "cpu_s": 3.0}}  # fmt: skip
    embedded = results(
        point("full", 1, "embedded", engine_rss_bytes=140 * MIB, engine_peak_rss_bytes=200 * MIB)
    )
    vllm = results(point("full", 1, "vllm", engine_processes=kinds))
    (row,) = engine_rows(embedded, vllm)
    assert row.process("api_server") == (40 * MIB, 200 * MIB, 2.0)
    assert row.process("worker") == (None, None, None)  # not measured: unknown, never 0
    expected = ["full", "1", "100 / 160", "40 / 200, 2 s", "180 / 180, 3 s", "- / -, - s"]
    assert process_rows([row]) == [expected]
    assert "## Where vLLM's figures come from" in engine_markdown([row])


def test_files_in_the_wrong_order_or_without_pairs_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    e, v = results(point("full", 2, "embedded")), results(point("full", 2, "vllm"))
    with pytest.raises(MmbenchError, match="give the embedded one first"):
        engine_rows(v, v)
    with pytest.raises(MmbenchError, match="no point measured with --engine vllm"):
        engine_rows(e, e)
    with pytest.raises(MmbenchError, match="no point of the two results files"):
        engine_rows(e, results(point("full", 3, "vllm")))
    save(tmp_path / "e", e)
    save(tmp_path / "v", v)
    out = CliRunner().invoke(app, ["fidelity", str(tmp_path / "v"), str(tmp_path / "e")])
    assert out.exit_code == 2 and len(out.stderr.strip().splitlines()) == 1
    ok = CliRunner().invoke(app, ["fidelity", str(tmp_path / "e"), str(tmp_path / "v"), "--format", "json"])
    assert ok.exit_code == 0 and '"mode": "full"' in ok.stdout
