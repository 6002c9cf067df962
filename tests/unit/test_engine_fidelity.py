"""`mmbench fidelity`: the embedded engine's points paired with vLLM's, figures side by side."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mmbench.analysis.engine_fidelity import engine_rows
from mmbench.cli import app
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.reporters.engine_fidelity_report import cell, engine_markdown
from mmbench.results import PointRecord, ResultsFile, save
from mmbench.units import MIB


def point(mode: str, k: int, engine: str, **fields: object) -> PointRecord:
    config = PointConfig(mode=mode, rollouts=k, engine_args="--max-num-seqs 8" if engine == "vllm" else "")
    base = {"engine_rss_baseline_bytes": 40 * MIB, "engine_bytes_received": 1000, "fallbacks": 0}
    return PointRecord(**config.to_dict(), engine=engine, **{**base, **fields})  # type: ignore[arg-type]


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


def test_files_in_the_wrong_order_or_without_pairs_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    e, v = results(point("full", 2, "embedded")), results(point("full", 2, "vllm"))
    with pytest.raises(MmbenchError, match="give the embedded one first"):
        engine_rows(v, v)
    with pytest.raises(MmbenchError, match="no point measured with --engine vllm"):
        engine_rows(e, e)
    with pytest.raises(MmbenchError, match="no point of the two results files"):
        engine_rows(e, results(replace(point("full", 2, "vllm"), rollouts=3)))
    save(tmp_path / "e", e)
    save(tmp_path / "v", v)
    out = CliRunner().invoke(app, ["fidelity", str(tmp_path / "v"), str(tmp_path / "e")])
    assert out.exit_code == 2 and len(out.stderr.strip().splitlines()) == 1
    ok = CliRunner().invoke(app, ["fidelity", str(tmp_path / "e"), str(tmp_path / "v"), "--format", "json"])
    assert ok.exit_code == 0 and '"mode": "full"' in ok.stdout
