"""Never lose a result, never leave a process behind: interrupt, resume, watchdog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.config import PointConfig, field_names
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import POINTS_LOG, load
from mmbench.sweep.loop import plan
from mmbench.sweep.scenarios import load_scenario
from tests.helpers import leftover_processes, wait_for

# Each request waits 250 ms in the engine, so the points after the first take seconds: the signal
# lands while the sweep still runs even on a loaded machine (a fast sweep could finish first).
TINY = (
    'version = 1\ndescription = "interrupt test"\nmode = ["full", "hash-only", "ephemeral"]\n'
    "rollouts = 1\nimage_size = 256\nturns = 3\nengine_delay_ms = 250\n"
)
POINTS = 3


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume_gives_the_uninterrupted_results(tmp_path: Path, sig: signal.Signals) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mmbench.cli", "sweep", str(scenario), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _lines(out / POINTS_LOG) >= 1, 120, "the first point")
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {alive}"
    finished = _lines(out / POINTS_LOG)
    assert 1 <= finished < POINTS
    on_disk = load(out)
    assert len(on_disk.points) == finished
    if sig != signal.SIGTERM:
        return  # what was written is the same whichever signal stopped it: resumed once (SIGTERM)

    # Resumed in this process: what is resumed is the results directory, whichever process wrote it
    # (and this one's fork servers are warm: 4 s less than a new command's start).
    resumed = CliRunner().invoke(app, [*cmd[3:-2], "--resume", str(out)], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.stderr
    assert f"{POINTS - finished} of {POINTS} points to run" in resumed.stdout
    final = load(out)
    planned = [
        (*(getattr(p.config, k) for k in field_names()), p.repeat) for p in plan(load_scenario(str(scenario)))
    ]
    assert [p.key() for p in final.points] == planned  # every point once, in plan order
    assert all(p.status == "ok" for p in final.points)
    assert _lines(out / POINTS_LOG) == POINTS


def test_resume_refuses_results_of_another_sweep(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = tmp_path / "out"
    out.mkdir()
    other = PointConfig(mode="ephemeral", rollouts=7, image_size="256", turns=3).to_dict()
    (out / POINTS_LOG).write_text(json.dumps({**other, "repeat": 0, "status": "ok"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "mmbench.cli", "sweep", str(scenario), "--resume", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not plan" in result.stderr


def test_the_watchdog_kills_a_worker_over_max_memory() -> None:
    # the worker's own baseline (python, numpy, torch) is far above 64 MiB; force: past preflight,
    # which would refuse it (the next test)
    options = HarnessOptions(max_memory=64 * 1024 * 1024, force=True)
    record = measure_point(PointConfig(mode="full", rollouts=1, turns=2, image_size="256"), options=options)
    assert record.status == "failed"
    assert record.cause and record.cause.startswith("exceeded --max-memory 64.0 MiB: worker RSS reached ")
    assert not leftover_processes()


def test_preflight_holds_a_point_to_max_memory_starting_nothing() -> None:
    options = HarnessOptions(max_memory=64 * 1024 * 1024)
    record = measure_point(PointConfig(mode="full", rollouts=1, turns=2, image_size="256"), options=options)
    assert record.status == "skipped"
    assert record.cause and record.cause.endswith("> available 64.0 MiB")
    assert record.client.rss.baseline_bytes is None
    assert not leftover_processes()


def test_the_engine_dies_with_its_parent(tmp_path: Path) -> None:
    """An engine whose harness is SIGKILLed (no cleanup runs) is not orphaned."""
    script = (
        "from mmbench.world.engine.process import EngineProcess\n"
        "from mmbench.world.engine.app import EngineConfig\n"
        "import os, sys, time\n"
        "e = EngineProcess(EngineConfig()); e.start()\n"
        "print(e.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        engine_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(engine_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_for(lambda: not _alive(engine_pid), 10, "the engine to exit")
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
