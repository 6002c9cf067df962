"""mmbench.measure.timeline: the sampler on real processes, the file format, turn boundaries, the
file name, the engine peak and the saved file a record names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.timeline import (
    SAMPLE_INTERVAL_S,
    Timeline,
    TimelineSampler,
    engine_peak,
    keep_timeline,
    load_timeline,
    save_timeline,
    timeline_name,
)
from mmbench.world.procmem import vmhwm_of


def sample_timeline() -> Timeline:
    return Timeline(
        t0=100.0,
        t=[0.0, 0.005, 0.01, 0.015],
        client_rss=[10, 30, None, 20],
        engine_rss=[5, 6, 7, None],
        turn_ends=[],
    )


# --- the sampler ---


def test_sampler_reads_both_processes_every_few_milliseconds() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        sampler = TimelineSampler(os.getpid(), child.pid).start()
        time.sleep(0.3)
        tl = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert 20 <= len(tl) <= 0.3 / SAMPLE_INTERVAL_S + 5
    assert tl.t[0] == 0.0 and tl.t == sorted(tl.t)
    gaps = [b - a for a, b in zip(tl.t, tl.t[1:], strict=False)]
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(SAMPLE_INTERVAL_S, abs=0.003)  # the median gap
    assert all(v is not None and v > 0 for v in tl.client_rss + tl.engine_rss)
    assert tl.peak("client_rss") == max(tl.client_rss)  # type: ignore[type-var]
    assert abs(tl.t0 + tl.t[-1] - time.monotonic()) < 1.0  # stamped with time.monotonic()


def test_a_missing_or_exited_process_reads_as_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    pids: list[int | None] = [None]
    tl = TimelineSampler(child.pid, lambda: pids[0], interval_s=0.002).start()
    time.sleep(0.05)
    timeline = tl.stop()
    assert set(timeline.client_rss) == {None} and set(timeline.engine_rss) == {None}
    assert timeline.peak("engine_rss") is None


def test_the_pid_is_looked_up_again_when_it_changes() -> None:
    """The engine restarts under a fault: a new pid is followed."""
    pids: list[int | None] = [None]
    sampler = TimelineSampler(None, lambda: pids[0], interval_s=0.002).start()
    time.sleep(0.03)
    pids[0] = os.getpid()
    time.sleep(0.03)
    tl = sampler.stop()
    assert tl.engine_rss[0] is None and tl.engine_rss[-1] is not None


def test_stop_without_start_still_gives_one_sample() -> None:
    tl = TimelineSampler(os.getpid(), None).stop()
    assert len(tl) == 1 and tl.client_rss[0] is not None and tl.engine_rss == [None]


def test_vmhwm_of_another_process() -> None:
    hwm = vmhwm_of(os.getpid())
    assert hwm is not None and hwm >= psutil.Process().memory_info().rss // 2
    assert vmhwm_of(None) is None
    assert vmhwm_of(2**22 + 12345) is None  # no such process


# --- the file ---


def test_json_round_trip_keeps_every_column_and_none() -> None:
    tl = sample_timeline().with_turn_ends([[100.004, 0, 1], [100.012, 1, 1]])
    back = Timeline.from_json(tl.to_json())
    assert back == tl
    data = json.loads(tl.to_json())
    assert data["columns"] == ["t", "client_rss", "engine_rss"] and data["version"] == 1
    assert " " not in tl.to_json().strip()  # compact


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"version": 9}', "not an mmbench timeline of version 1"),
        ("[1]", "not an mmbench timeline"),
        ('{"version": 1, "t0": 0, "t": [0, 1], "client_rss": [1], "engine_rss": [1, 2]}', "damaged"),
        ('{"version": 1, "t": [], "client_rss": [], "engine_rss": []}', "damaged"),
    ],
)
def test_a_bad_file_is_one_error(text: str, message: str) -> None:
    with pytest.raises(MmbenchError, match=message):
        Timeline.from_json(text, "x.json")


def test_load_a_missing_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(MmbenchError, match="cannot read the timeline"):
        load_timeline(tmp_path / "nope.json")


# --- turn marks ---


def test_turn_ends_move_to_the_timeline_clock_in_order() -> None:
    tl = sample_timeline().with_turn_ends([(100.5, 1, 1), (100.25, 0, 1)])
    assert tl.turn_ends == [(0.25, 0, 1), (0.5, 1, 1)]


def test_a_turn_boundary_is_when_every_rollout_has_finished_it() -> None:
    stamps = [(100.1, 0, 1), (100.3, 1, 1), (100.2, 2, 1), (100.6, 0, 2), (100.5, 1, 2), (100.4, 2, 2)]
    tl = sample_timeline().with_turn_ends(stamps)
    assert tl.turn_boundaries() == [(1, pytest.approx(0.3)), (2, pytest.approx(0.6))]


# --- names and records ---


def test_timeline_name_has_mode_k_a_hash_of_the_rest_and_the_repeat() -> None:
    a = PointConfig(mode="hash-only", rollouts=8, image_size="512")
    name = timeline_name(a, 2)
    assert name.startswith("hash-only-K8-") and name.endswith("-r2.json")
    assert timeline_name(a, 2) == name  # stable
    digest = name.split("-")[-2]
    assert timeline_name(PointConfig(mode="full", rollouts=4, image_size="512"), 0).split("-")[-2] == digest
    assert timeline_name(PointConfig(mode="hash-only", rollouts=8, image_size="256"), 2) != name


def test_keep_timeline_saves_it_and_names_it_relative_to_the_results(tmp_path: Path) -> None:
    config = PointConfig(mode="full", rollouts=2)
    ends = [(100.004, 0, 1), (100.006, 1, 1)]
    name = keep_timeline(sample_timeline(), ends, tmp_path / "timelines", config, 1)
    assert name == f"timelines/{timeline_name(config, 1)}"
    saved = load_timeline(tmp_path / name)
    assert saved.client_rss == [10, 30, None, 20]
    assert saved.turn_boundaries() == [(1, pytest.approx(0.006))]


def test_the_engine_peak_is_its_vmhwm_or_the_sampled_peak_where_higher() -> None:
    assert engine_peak(sample_timeline(), 9) == 9  # VmHWM, above the sampled peak 7
    assert engine_peak(sample_timeline(), 5) == 7
    assert engine_peak(sample_timeline(), None) == 7
    assert engine_peak(None, None) is None


def test_keep_timeline_without_a_directory_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert keep_timeline(sample_timeline(), [], None, PointConfig(), 0) is None
    assert list(tmp_path.iterdir()) == []


def test_save_timeline_overwrites_atomically(tmp_path: Path) -> None:
    config = PointConfig()
    first = save_timeline(sample_timeline(), tmp_path, config, 0)
    second = save_timeline(sample_timeline().with_turn_ends([(100.01, 0, 1)]), tmp_path, config, 0)
    assert first == second and [p.name for p in tmp_path.iterdir()] == [first.name]
    assert load_timeline(first).turn_ends == [(pytest.approx(0.01), 0, 1)]
