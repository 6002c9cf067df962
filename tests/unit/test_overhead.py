"""Where a point's time went (mmbench.measure.overhead) and the --timings table, on hand-built stamps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.overhead import OVERHEAD_FIELDS, HarnessStamps, TimingSummary, overhead, point_overhead
from mmbench.measure.worker_io import WorkerPhases, WorkerResult
from mmbench.migrations import V5_PATHS
from mmbench.record import ClientFigures, Overhead, Traffic
from mmbench.reporters.timings import timings_table
from mmbench.results import PointRecord
from tests.helpers import flat_record

# The harness's stamps and the worker's, on one clock (seconds).
STAMPS = HarnessStamps(begin=100.0, sources_ready=100.25, engine_ready=100.5, spawn=100.6, exited=105.0,
                       engine_stopped=105.25)  # fmt: skip
PHASES = WorkerPhases(main=100.625, setup=101.0, rollouts=101.5, rollouts_end=104.5, readings=104.75)


def test_each_phase_is_its_own_span_and_other_is_what_is_left() -> None:
    wall, rollouts = STAMPS.engine_stopped - STAMPS.begin, 3.0  # type: ignore[operator]
    fields = overhead(STAMPS, PHASES, wall, rollouts)
    assert fields == Overhead(
        sources_s=0.25,
        engine_start_s=0.25,
        worker_start_s=0.025,
        setup_s=0.375,
        readings_s=0.5 + 0.25,
        engine_stop_s=0.25,
        other_s=0.35,  # 5.25 - 3.0 - (0.25 + 0.25 + 0.025 + 0.375 + 0.75 + 0.25)
    )
    assert sum(getattr(fields, k) for k in OVERHEAD_FIELDS) + rollouts == pytest.approx(wall)


def test_a_worker_that_reported_nothing_leaves_its_phases_unknown() -> None:
    fields = overhead(STAMPS, None, 5.25, None)
    assert fields.worker_start_s is None
    assert fields.setup_s is None and fields.readings_s is None
    assert fields.engine_start_s == 0.25 and fields.engine_stop_s == 0.25
    assert fields.other_s == pytest.approx(5.25 - 0.75)


def test_a_worker_result_missing_a_phase_is_not_read() -> None:
    """The harness gets every phase or none: a result without one is no result (one error line)."""
    good = WorkerResult(ClientFigures(), Traffic(), PHASES, rollout_wall_s=3.0)
    assert WorkerResult.decode(good.encode()) == good
    data = json.loads(good.encode())
    del data["phases"]["setup"]
    with pytest.raises(MmbenchError, match="cannot be read"):
        WorkerResult.decode(json.dumps(data).encode())


def test_a_point_that_never_started_its_engine() -> None:
    fields = overhead(HarnessStamps(begin=1.0, sources_ready=1.5), None, 0.75, None)
    assert fields.sources_s == 0.5
    assert fields.engine_start_s is None and fields.engine_stop_s is None
    assert fields.other_s == 0.25


V5_OVERHEAD = [k for k in V5_PATHS if k.startswith("overhead_")]


def record(k: int, wall: float | None, rollouts: float | None, **extra: Any) -> PointRecord:
    phases = dict.fromkeys(V5_OVERHEAD, 0.1) if wall is not None else {}
    return flat_record(**PointConfig(rollouts=k).to_dict(), **{"start_method": "fork", **extra}, wall_s=wall,
                       rollout_wall_s=rollouts, **phases)  # fmt: skip


def test_summary_medians_the_overhead_and_sums_the_phases() -> None:
    records = [record(1, 2.0, 1.5), record(2, 3.0, 2.0), record(4, 5.0, 4.5), record(8, None, None)]
    assert point_overhead(records[1]) == 1.0 and point_overhead(records[3]) is None
    s = TimingSummary.of(records)
    assert s.points == 3
    assert s.wall_s == 10.0 and s.rollout_s == 8.0
    assert s.median_overhead_s == 0.5
    assert s.phase_s["setup_s"] == pytest.approx(0.3)
    assert TimingSummary.of([record(1, 2.0, 1.5), record(2, 3.0, 2.0)]).median_overhead_s == 0.75
    assert TimingSummary.of([]).median_overhead_s is None


def render(table: Any) -> str:
    console = Console(width=250, record=True)
    console.print(table)
    return console.export_text()


def test_timings_table_shows_every_phase_and_the_totals() -> None:
    text = render(timings_table([record(1, 2.0, 1.5), record(2, 3.0, 2.0), record(4, None, None)]))
    header = " ".join(text.splitlines()[1:3])  # two-word headers stand on two lines
    for word in ("wall", "rollouts", "overhead", "sources", "engine", "start", "worker", "setup",
                 "readings", "stop", "other"):  # fmt: skip
        assert word in header, word
    assert "cpu" not in text
    assert "2 points: 5.0 s, of which rollouts 3.5 s (70%); median overhead per point 0.75 s" in text
    rows = [line for line in text.splitlines() if line.startswith("│ full")]
    assert len(rows) == 2  # the unmeasured point has no row
    assert "started by fork" in text  # the start method all points share, once
    assert "│ total" in text


def test_start_methods_that_differ_get_a_column() -> None:
    mixed = [record(1, 2.0, 1.5), record(2, 3.0, 2.0, start_method="exec")]
    text = render(timings_table(mixed))
    rows = [line for line in text.splitlines() if line.startswith("│ full")]
    assert "fork" in rows[0] and "exec" in rows[1] and "started by" not in text


def test_cpu_seconds_are_shown_with_their_split_where_records_have_them() -> None:
    text = render(timings_table([record(2, 3.0, 2.0, client_cpu_s=3.0, engine_cpu_s=1.0)]))
    header = " ".join(text.splitlines()[1:3])
    assert "client" in header and "engine" in header and "cpu" in header
    assert "client 75%, engine 25%" in " ".join(text.split())  # the caption may wrap
