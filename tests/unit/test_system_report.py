"""The whole-system rows, tables and figure of the trainer stage, on hand-built records."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mmbench.analysis.system import STAGES, system_rows
from mmbench.config import PointConfig
from mmbench.record import (
    ClientFigures,
    EngineFigures,
    EngineRecord,
    OrchestratorFigures,
    PointRecord,
    TrainerFigures,
    TrainerPrediction,
    TrainerRanks,
)
from mmbench.reporters.plot import plot_data, plot_results
from mmbench.reporters.system_table import dedup_pairs, system_markdown, system_tables
from mmbench.results import ResultsFile
from mmbench.units import MIB

RANKS = TrainerRanks(
    bytes_received=[100 * MIB, 100 * MIB], peak_bytes=[200 * MIB, 150 * MIB], cpu_s=[1.0, 1.5],
    processor_runs=[4, 4], materialize_cpu_s=[0.4, 0.4],
)  # fmt: skip


def record(dedup: str = "off", shipped: int = 200 * MIB, trainer: str = "both") -> PointRecord:
    config = PointConfig(mode="raw", rollouts=4, turns=2, trainer=trainer, group_size=4, dedup=dedup)
    figures = TrainerFigures(
        transport="files", checked=16, wrong=0,
        orchestrator=OrchestratorFigures(
            bytes_shipped=shipped, bytes_per_rank=[shipped // 2] * 2, peak_bytes=50 * MIB, cpu_s=0.5,
            unique_images=5, processor_runs=0, micro_batches=4,
        ),
        eager=RANKS, lazy=replace(RANKS, peak_bytes=[80 * MIB, 70 * MIB]),
        prediction=TrainerPrediction(bytes_shipped=shipped, eager_peak_bytes=190 * MIB),
    )  # fmt: skip
    return PointRecord(
        config, client=ClientFigures(peak_bytes=300 * MIB, cpu_s=2.0),
        engine=EngineRecord(figures=EngineFigures(rss_baseline_bytes=100 * MIB, peak_rss_bytes=400 * MIB)),
        trainer=figures if trainer != "off" else TrainerFigures(),
    )  # fmt: skip


def test_a_row_per_point_that_ran_the_stage_with_the_whole_systems_peak() -> None:
    rows = system_rows([record(), record(trainer="off")])
    assert len(rows) == 1
    row = rows[0]
    assert tuple(s.stage for s in row.stages) == STAGES
    assert row.stage("engine").peak_bytes == 300 * MIB  # type: ignore[union-attr]
    # env worker + engine + orchestrator + both ranks
    assert row.system_peak_bytes("eager") == (300 + 300 + 50 + 350) * MIB
    assert row.system_peak_bytes("lazy") == (300 + 300 + 50 + 150) * MIB
    assert row.rederive_cpu_per_image_s() == ("trainer eager", 0.1)


def test_the_tables_and_the_markdown_say_what_dedup_saves() -> None:
    rows = system_rows([record(), record(dedup="on", shipped=150 * MIB)])
    assert len(dedup_pairs(rows)) == 1
    assert [t.title for t in system_tables(rows)][-1] == "what dedup saves"
    text = system_markdown(rows)
    assert "| raw G=4 | 200.0 MiB | 150.0 MiB | 50.0 MiB (25 %) |" in text
    assert "| raw G=4 dedup |" in text and "0 of 16" in text


def test_the_system_figure_is_drawn(tmp_path: Path) -> None:
    results = ResultsFile({}, {"name": "t"}, [record(), record(dedup="on", shipped=150 * MIB)])
    assert len(plot_data(results).system) == 2
    written = plot_results(results, tmp_path)
    assert tmp_path / "system.png" in written
