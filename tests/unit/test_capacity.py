"""`mmbench plan --measure`'s search: what it measures, what it concludes, what it reuses.

The harness is replaced by a machine whose system peak is known (so that every branch of the search
is driven); the real search, through the real harness, is tests/cli/test_plan_measure_cli.py's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.harness import EXCEEDED, HarnessOptions
from mmbench.results import PointRecord, read_points_log
from mmbench.sweep import capacity
from mmbench.sweep.capacity import Probe, Search, measured_system_peak, search, stopped_for_memory
from mmbench.units import GIB, MIB
from tests.helpers import flat_record

BASE = PointConfig(image_size="256", turns=2)


def fake(limit: int):  # type: ignore[no-untyped-def]
    """A measure that fits up to `limit`, and the Ks it was asked for."""
    asked: list[int] = []

    def measure(k: int) -> Probe:
        asked.append(k)
        record = PointRecord(replace(BASE, rollouts=k))
        return Probe(k, record, k <= limit, False)

    return measure, asked


@given(st.integers(1, 400), st.integers(0, 500))
def test_the_search_finds_the_largest_k_that_fits_from_any_start(start: int, limit: int) -> None:
    measure, asked = fake(limit)
    found, capped = search(start, measure, cap=450)
    assert found == min(limit, 450) and capped == (limit >= 450)
    assert len(asked) == len(set(asked))  # no point is measured twice
    assert asked[0] == start


def test_a_tight_start_costs_few_points() -> None:
    measure, asked = fake(100)
    assert search(90, measure) == (100, False)
    assert asked == [90, 113, 101, 95, 98, 99, 100]  # a quarter up, then bisected


def record(k: int, peak: int | None, status: str = "ok", cause: str | None = None) -> PointRecord:
    fields = {} if peak is None else {"rss_baseline_bytes": 200 * MIB, "peak_bytes": peak - 240 * MIB,
                                      "engine_peak_rss_bytes": 40 * MIB}  # fmt: skip
    return flat_record(**replace(BASE, rollouts=k).to_dict(), status=status, cause=cause, **fields)


def test_the_system_peak_is_the_clients_with_its_baseline_plus_the_engines() -> None:
    assert measured_system_peak(record(4, GIB)) == GIB
    assert measured_system_peak(record(4, None)) is None
    assert measured_system_peak(replace(record(4, GIB), status="failed")) is None
    over = record(9, None, "failed", f"{EXCEEDED} 1.0 GiB: worker and engine RSS reached 1.0 GiB")
    assert stopped_for_memory(over) and stopped_for_memory(
        record(9, None, "failed", "worker killed by SIGKILL")
    )
    assert not stopped_for_memory(record(9, None, "failed", "worker exited with code 1: boom"))


class Machine:
    """The harness's stand-in: each rollout adds 50 MiB to a 300 MiB system; points the watchdog
    would stop fail as it records them."""

    def __init__(self, memory: int, fail_at: int = 0) -> None:
        self.memory, self.fail_at, self.runs = memory, fail_at, []

    def __call__(self, config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
        assert options.force and options.max_memory == self.memory and options.memory_scope == "system"
        self.runs.append(config.rollouts)
        if config.rollouts == self.fail_at:
            return record(config.rollouts, None, "failed", "worker exited with code 1: boom")
        peak = 300 * MIB + 50 * MIB * config.rollouts
        if peak > self.memory:
            return record(
                config.rollouts, None, "failed", f"{EXCEEDED} ...: worker and engine RSS reached ..."
            )
        return record(config.rollouts, peak)


def test_a_search_keeps_its_points_and_a_second_run_measures_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = Machine(GIB)  # 300 MiB + 50 MiB x K fits up to K = 14
    monkeypatch.setattr(capacity, "measure_here", machine)
    first = Search(BASE, GIB, "embedded", tmp_path, HarnessOptions()).mode("full", 10)
    assert first.measured_rollouts == 14 and first.ratio == pytest.approx(10 / 14) and not first.error
    assert sorted(r.config.rollouts for r in read_points_log(tmp_path)) == sorted(machine.runs)
    measured = len(machine.runs)
    again = Search(BASE, GIB, "embedded", tmp_path, HarnessOptions())
    again.check_resumable()
    assert again.mode("full", 10).measured_rollouts == 14
    assert len(machine.runs) == measured  # every point reused
    other = Search(replace(BASE, turns=4), GIB, "embedded", tmp_path, HarnessOptions())
    with pytest.raises(MmbenchError, match="holds points of another search"):
        other.check_resumable()


def test_a_point_that_fails_for_another_reason_stops_that_modes_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capacity, "measure_here", Machine(GIB, fail_at=13))
    found = Search(BASE, GIB, "embedded", None, HarnessOptions()).mode("full", 10)
    assert found.error.startswith("full K=13 failed: worker exited with code 1")
    assert [p.rollouts for p in found.probes] == [10, 13]
