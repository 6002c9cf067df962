"""The instrument end to end: a point in fresh processes, a killed worker, a sweep through the CLI."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from mmbench.api import load_results, run_point
from mmbench.cli import app
from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import POINTS_LOG, RESULTS_CSV, RESULTS_JSON, SCHEMA_VERSION, load
from mmbench.sweep.loop import run_sweep
from mmbench.sweep.scenarios import parse_scenario
from tests.helpers import leftover_processes

SMALL = {"image_size": "256", "turns": 3, "rollouts": 2}
REQUIRED = (
    "config.mode", "config.model", "config.image_size", "config.turns", "config.images_per_turn",
    "config.rollouts", "repeat", "status", "client.rss.baseline_bytes", "client.rss.peak_bytes",
    "client.rss.retained_bytes", "client.rss.retained_trimmed_bytes", "client.rss.released_bytes",
    "client.retained_bytes", "client.retained_live_bytes", "client.allocator_retention_bytes",
    "client.peak_bytes", "prediction.retained_bytes", "client.accounting.stored_pixel_bytes",
    "client.accounting.source_bytes", "traffic.bytes_shipped", "prediction.bytes_shipped",
    "traffic.requests", "traffic.full_items_sent", "traffic.null_items_sent", "traffic.fallbacks",
    "traffic.wrong_results", "engine.figures.rss_bytes", "engine.figures.cache_bytes", "timing.wall_s",
    "prediction.renderer_cache_misses", "prediction.fallbacks", "prediction.engine_peak_bytes",
    "prediction.system_peak_bytes",
)  # fmt: skip


def no_children() -> list[psutil.Process]:
    return leftover_processes()


def test_a_point_is_measured_in_fresh_processes() -> None:
    record = measure_point(PointConfig(mode="full", **SMALL))
    assert record.status == "ok", record.cause
    d = record.flat()
    for key in REQUIRED:
        assert d[key] is not None, key
    assert record.client.retained_bytes == record.client.rss.retained_bytes - record.client.rss.baseline_bytes
    # the trimmed reading against the baseline as the same trim leaves it (measured in a fork)
    floor = record.client.rss.baseline_trim_floor_bytes
    assert floor is not None and 0 <= floor < 64 * 1024**2
    live_baseline = record.client.rss.baseline_bytes - floor
    assert record.client.retained_live_bytes == record.client.rss.retained_trimmed_bytes - live_baseline
    assert (
        record.client.allocator_retention_bytes
        == record.client.retained_bytes - record.client.retained_live_bytes
    )
    assert record.client.peak_bytes == record.client.rss.peak_bytes - record.client.rss.baseline_bytes
    assert record.client.rss.peak_method in ("vmhwm", "sampler")
    assert record.client.rss.peak_bytes >= record.client.rss.retained_bytes
    # full keeps N distinct pixel arrays per rollout: 2 x 3 x 256x256 pixels
    assert record.client.accounting.stored_pixel_bytes == 2 * 3 * 1024 * 1536
    assert record.traffic.bytes_shipped == record.engine.figures.bytes_received
    assert record.prediction.shipped_ratio == pytest.approx(1.0, abs=0.01)
    assert record.traffic.wrong_results == 0 and record.traffic.failed_rollouts == 0
    assert record.traffic.requests == 6 and record.traffic.full_items_sent == 2 * (1 + 2 + 3)
    # the model's counts, beside the measured ones
    assert record.prediction.renderer_cache_misses == record.client.rendering.cache_misses == 6
    assert record.prediction.renderer_cache_hits == record.client.rendering.cache_hits == 0
    assert record.prediction.fallbacks == record.traffic.fallbacks == 0
    assert record.prediction.engine_cache_misses == record.engine.figures.cache_misses == 0
    engine_and_client = record.prediction.peak_bytes + record.prediction.engine_peak_bytes
    assert record.prediction.system_peak_bytes > engine_and_client  # and the client's baseline
    assert record.client.allocator.glibc and record.client.allocator.glibc.startswith("glibc")
    assert not no_children()
    # where its time went: every phase measured, together with the rollouts they make up wall_s
    assert record.timing.start_method == "fork"
    phases = list(asdict(record.timing.overhead).values())
    assert all(p is not None and p >= 0 for p in phases), phases
    assert record.timing.wall_s is not None and record.timing.rollout_wall_s is not None
    assert sum(phases) + record.timing.rollout_wall_s == pytest.approx(record.timing.wall_s, abs=0.01)


def test_a_killed_worker_is_recorded_and_nothing_is_left_behind() -> None:
    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    record = measure_point(PointConfig(mode="full", **SMALL), options=HarnessOptions(on_worker_start=kill))
    assert record.status == "failed"
    assert record.cause == "worker killed by SIGKILL"
    assert record.client.retained_bytes is None
    assert not no_children()  # the engine was stopped too


def test_a_sweep_goes_on_after_a_killed_worker(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {"version": 1, "description": "kill test", "mode": ["full", "hash-only"], "rollouts": [1, 2],
         "image_size": 256, "turns": 2},
        "kill", "test",
    )  # fmt: skip
    started: list[int] = []

    def kill_second(pid: int) -> None:
        started.append(pid)
        if len(started) == 2:
            os.kill(pid, signal.SIGKILL)

    results = run_sweep(scenario, tmp_path, HarnessOptions(on_worker_start=kill_second))
    assert [p.status for p in results.points] == ["ok", "failed", "ok", "ok"]
    assert "SIGKILL" in (results.points[1].cause or "")
    on_disk = load(tmp_path)
    assert on_disk.points == results.points
    assert len((tmp_path / POINTS_LOG).read_text().splitlines()) == 4
    assert not no_children()


def test_sweep_through_the_cli_writes_the_results_directory(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(
        'version = 1\ndescription = "tiny"\nmode = ["full", "ephemeral+hash-only"]\n'
        "rollouts = [1, 2]\nimage_size = 256\nturns = 2\n"
    )
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["sweep", str(scenario), "--out", str(out_dir), "--timings"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    assert "tiny" in result.stdout and "ephemeral+hash-only" in result.stdout
    assert "where the time went" in result.stdout and "median overhead per point" in result.stdout
    # It ends with the modes side by side, their slopes against the floors, then the plot command.
    out = result.stdout
    assert out.index("Memory, bytes and time per mode") < out.index("least squares over K")
    assert out.rstrip().splitlines()[-1].startswith(f"figures: mmbench plot {out_dir}")
    data = json.loads((out_dir / RESULTS_JSON).read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    for key in ("python", "numpy", "torch", "cpu_model", "cpu_count", "memory_total_bytes", "kernel",
                "git_commit", "mmbench", "timestamp_utc"):  # fmt: skip
        assert key in data["environment"], key
    assert [(p["config"]["mode"], p["config"]["rollouts"]) for p in data["points"]] == [
        ("full", 1), ("full", 2), ("ephemeral+hash-only", 1), ("ephemeral+hash-only", 2),
    ]  # fmt: skip
    assert len((out_dir / RESULTS_CSV).read_text().splitlines()) == 5
    df = load_results(out_dir)
    assert list(df["config.rollouts"]) == [1, 2, 1, 2]
    assert (df["traffic.wrong_results"] == 0).all()


def test_run_json_writes_the_sweep_schema(tmp_path: Path) -> None:
    target = tmp_path / "point.json"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--mode",
            "hash-only",
            "-k",
            "1",
            "--turns",
            "2",
            "--image-size",
            "256",
            "--json",
            str(target),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    loaded = load(target)
    assert len(loaded.points) == 1 and loaded.points[0].config.mode == "hash-only"
    assert loaded.points[0].traffic.null_items_sent == 1


def test_api_run_point_rejects_unknown_parameters() -> None:
    from mmbench.errors import MmbenchError

    with pytest.raises(MmbenchError, match="unknown key 'rollout'"):
        run_point(rollout=2)


def test_preflight_skips_a_huge_point_without_starting_anything() -> None:
    record = measure_point(PointConfig(mode="full", rollouts=256, image_size="2048"))
    assert record.status == "skipped"
    assert record.cause and record.cause.startswith("predicted ")
    assert record.timing.wall_s is None and record.client.rss.baseline_bytes is None
    assert not no_children()
