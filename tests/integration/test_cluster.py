"""Clustered sweeps on loopback: placement by declared memory, a killed worker, Ctrl-C and resume.

One cluster serves the module (starting one costs seconds): a scheduler and two single-threaded
worker processes on 127.0.0.1 declaring different memory, as real machines would. Tests that only
exercise the scheduling use a trivial measurement (the `measure` hook of the cluster's task)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
from distributed import Client

from mmbench.cluster.connect import ALLOWED_FAILURES
from mmbench.cluster.placement import MEMORY_RESOURCE, SLOT_RESOURCE
from mmbench.cluster.runner import ClusterRunner
from mmbench.cluster.task import nanny_environ
from mmbench.measure.harness import prediction_for
from mmbench.results import PointRecord, load, read_points_log
from mmbench.sweep.loop import PlannedPoint, plan, run_sweep
from mmbench.sweep.scenarios import Scenario
from tests.cluster_measures import environment_probe, stand_in, trivial
from tests.helpers import TRAFFIC_FIGURES, wait_for

# Its own tier (make test-cluster, which CI also runs): dask's scheduler and worker processes cost
# ~30 s of a 2-core machine, an eighth of make test's budget.
pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
SMALL, BIG = int(1.5 * GIB), 8 * GIB  # what the two workers declare
TINY = {"mode": ["full", "hash-only"], "rollouts": [1], "image_size": ["64"], "turns": [2]}


def _dask(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """dask's own command, as a user starts it on each machine (here on 127.0.0.1)."""
    cmd = [sys.executable, "-m", "dask", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, dict[str, str]]]:
    """(client, {"small": address, "big": address}): a scheduler and two workers started with the
    README's commands, in processes of their own (in this one, dask's process machinery would stay
    behind as a child that the harness tests rightly count as left over)."""
    scheduler_file = tmp_path_factory.mktemp("cluster") / "scheduler.json"
    # The workers import the stand-in measurements from tests/cluster_measures.py.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(ALLOWED_FAILURES)
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(scheduler_file), env=env)]  # fmt: skip
    client: Client | None = None
    try:
        wait_for(scheduler_file.exists, 60, "the scheduler")
        for name, memory in (("small", SMALL), ("big", BIG)):
            procs.append(_dask(
                "worker", "--scheduler-file", str(scheduler_file), "--name", name, "--host", "127.0.0.1",
                "--nthreads", "1", "--memory-limit", "0", "--no-dashboard",
                "--resources", f"{SLOT_RESOURCE}=1,{MEMORY_RESOURCE}={memory}", env=env,
            ))  # fmt: skip
        client = Client(scheduler_file=str(scheduler_file), timeout=30)
        client.wait_for_workers(2, timeout=60)
        yield client, {w["name"]: address for address, w in client.scheduler_info()["workers"].items()}
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):  # workers first: they close their nannies, then the scheduler
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_declaring_too_little_memory_never_receives_a_point_it_cannot_hold(
    cluster: tuple[Client, dict[str, str]], tmp_path: Path
) -> None:
    client, workers = cluster
    scenario = Scenario(
        "mem", "placement", {"mode": ["full"], "rollouts": [1, 4, 8, 16, 64], "image_size": ["512"]}
    )
    need = {p.config.rollouts: prediction_for(p.config)[1].system_peak_bytes for p in plan(scenario)}
    assert need[1] < SMALL < need[4] < need[8] < need[16] < BIG < need[64]  # the premise
    started: list[tuple[int, str]] = []
    runner = ClusterRunner(
        client, measure=trivial, on_event=lambda p, e: started.append((p.config.rollouts, e["worker"]))
    )
    results = run_sweep(scenario, tmp_path, runner=runner)
    by_k = {r.config.rollouts: r for r in results.points}
    assert [r.config.rollouts for r in results.points] == [1, 4, 8, 16, 64]
    assert all(by_k[k].status == "ok" for k in (1, 4, 8, 16)), [r.cause for r in results.points]
    assert {w for k, w in started if k > 1} == {workers["big"]}  # never offered to the small one
    assert all(by_k[k].machine.cluster_worker == workers["big"] for k in (4, 8, 16))
    skipped = by_k[64]
    assert skipped.status == "skipped" and skipped.machine.cluster_worker is None
    assert skipped.cause is not None and "mmbench_memory" in skipped.cause and "8.0 GiB" in skipped.cause
    assert skipped.prediction.peak_bytes is not None  # as preflight's skipped points have it
    assert len(read_points_log(tmp_path)) == 5


def test_a_worker_of_another_version_refuses_the_point_with_the_reason(
    cluster: tuple[Client, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmbench.cluster.runner as runner_module

    real_job_for = runner_module.job_for
    monkeypatch.setattr(
        runner_module, "job_for", lambda *a, **kw: {**real_job_for(*a, **kw), "mmbench": "0.0.1"}
    )
    client, _ = cluster
    scenario = Scenario("v", "versions", {"mode": ["full"], "rollouts": [1], "image_size": ["64"]})
    [record] = run_sweep(scenario, None, runner=ClusterRunner(client, measure=trivial)).points
    assert record.status == "failed" and record.traffic.bytes_shipped is None  # nothing was measured
    assert record.cause is not None and "mmbench 0.0.1" in record.cause and "install" in record.cause
    assert record.machine.host is not None  # the worker that refused says where it is


def test_a_point_measures_without_the_variables_the_nanny_gives_its_worker(
    cluster: tuple[Client, dict[str, str]],
) -> None:
    """The nanny sets MALLOC_TRIM_THRESHOLD_ and thread caps for its worker; inherited by the
    point's processes they shifted retained (live) by ~3 MiB at 256x256 against a local sweep."""
    client, _ = cluster
    scenario = Scenario("env", "environment", {"mode": ["full"], "rollouts": [1], "image_size": ["64"]})
    [record] = run_sweep(scenario, None, runner=ClusterRunner(client, measure=environment_probe)).points
    seen, nanny = json.loads(record.cause or "{}"), nanny_environ()
    assert len(seen) == 3 and all(value != nanny[k] for k, value in seen.items())


def test_a_killed_worker_costs_a_retry_then_a_failure_and_never_a_lost_or_doubled_point(
    cluster: tuple[Client, dict[str, str]], tmp_path: Path
) -> None:
    """full's worker is killed once mid-point (retried, then ok), hash-only's at both attempts
    (failed after the one retry); the killed points' measuring processes die with their worker."""
    client, _ = cluster
    kills = {"full": 1, "hash-only": 2}
    worker_pid: dict[str, int] = {}
    killed_children: list[int] = []

    def on_event(point: PlannedPoint, event: dict[str, Any]) -> None:
        mode = point.config.mode
        if event["event"] == "started":
            worker_pid[mode] = event["pid"]
        elif event["event"] == "measuring" and kills[mode] > 0:
            kills[mode] -= 1
            killed_children.append(event["pid"])
            os.kill(worker_pid[mode], signal.SIGKILL)
        elif event["event"] == "measuring":
            (tmp_path / str(event["pid"])).touch()

    runner = ClusterRunner(client, measure=partial(stand_in, tmp_path), on_event=on_event)
    results = run_sweep(Scenario("kill", "kill", TINY), tmp_path / "out", runner=runner)
    full, hash_only = results.points
    assert (full.config.mode, full.status, full.machine.cluster_attempts) == ("full", "ok", 2)
    assert (hash_only.status, hash_only.machine.cluster_attempts) == ("failed", 2)
    assert hash_only.cause is not None and "died during the point on each of 2 attempts" in hash_only.cause
    logged = read_points_log(tmp_path / "out")  # in arrival order: each planned point exactly once
    assert sorted(map(str, (r.key() for r in logged))) == sorted(map(str, (r.key() for r in results.points)))
    assert len(logged) == 2 and len(killed_children) == 3
    for pid in killed_children:
        wait_for(lambda pid=pid: _gone(pid), 10, f"measuring process {pid} to die with its worker")


def test_ctrl_c_cancels_what_runs_keeps_what_finished_and_resume_completes_the_plan(
    cluster: tuple[Client, dict[str, str]], tmp_path: Path
) -> None:
    client, _ = cluster
    grid = {"mode": ["full", "hash-only"], "rollouts": [1, 2], "image_size": ["64"]}
    scenario = Scenario("int", "interrupt", grid)
    out = tmp_path / "out"
    long_running: list[int] = []
    done: list[PointRecord] = []

    # Ctrl-C as soon as a K=1 point has finished and a K=2 one is running, whichever comes second.
    def on_event(point: PlannedPoint, event: dict[str, Any]) -> None:
        if event["event"] != "measuring":
            return
        if point.config.rollouts == 1:
            (tmp_path / str(event["pid"])).touch()  # K=1 finishes, K=2 runs until cancelled
            return
        long_running.append(event["pid"])
        if done:
            raise KeyboardInterrupt

    def interrupt(point: PlannedPoint, record: PointRecord) -> None:
        done.append(record)
        if long_running:
            raise KeyboardInterrupt

    runner = ClusterRunner(client, measure=partial(stand_in, tmp_path), on_event=on_event)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(scenario, out, on_done=interrupt, runner=runner)
    kept = read_points_log(out)
    assert 1 <= len(kept) < 4 and all(r.config.rollouts == 1 and r.ok for r in kept)
    assert len(load(out).points) == len(kept)
    for pid in long_running:  # cancelled: its worker killed the measuring process at once
        wait_for(lambda pid=pid: _gone(pid), 10, f"cancelled measurement {pid} to be killed")

    resumed = run_sweep(scenario, out, finished=kept, runner=ClusterRunner(client, measure=trivial))
    assert [r.key() for r in resumed.points] == [p.key for p in plan(scenario)]
    assert len(read_points_log(out)) == 4  # every planned point exactly once


BASELINE = ROOT / "results" / "ci-baseline"
# Figures that do not depend on timing: a clustered point must give them to the byte.
EXACT = TRAFFIC_FIGURES


def test_sweep_cluster_local_gives_the_local_sweeps_points(tmp_path: Path) -> None:
    """`mmbench sweep ci --cluster local:2` (two of its points): the committed baseline's figures,
    which a local `mmbench sweep ci` reproduces (tests/integration/test_baseline.py). In a process
    of its own, as a user runs it: a local cluster's process machinery stays with its parent."""
    out = tmp_path / "out"
    args = [
        "sweep",
        "ci",
        "--modes",
        "full,hash-only",
        "--rollouts",
        "1",
        "--cluster",
        "local:2",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "mmbench.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "cluster local:2" in result.stdout and "2 worker(s)" in result.stdout
    assert "Traceback" not in result.stderr
    head = load(out).points
    base = {r.key(): r for r in load(BASELINE).points}
    assert len(head) == 2 and all(r.key() in base for r in head)
    for r in head:
        assert r.status == "ok" and r.machine.cluster_worker and r.machine.cluster_attempts == 1
        assert r.machine.host and r.machine.cpu_count and r.machine.environment
        assert r.timing.timeline_file and (out / r.timing.timeline_file).exists()
        flat, want = r.flat(), base[r.key()].flat()
        for name in EXACT:
            assert flat[name] == want[name], name
