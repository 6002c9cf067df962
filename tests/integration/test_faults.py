"""Engine faults end to end: a real engine process (restarted by its supervisor where asked),
K rollouts per mode, and the client's fallback and retries (docs domain.md sections 6 and 7).

Small images (64x64, padded to 256x256: 1.5 MiB of pixels per item), K=2, N=4.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.rollout import Totals
from mmbench.rollout.driver import RETRY_FIRST_S, RETRY_MAX_S
from mmbench.transports import MODES
from mmbench.world.engine.__main__ import PROCESS_NAME as ENGINE_PROCESS_NAME
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess
from tests.conftest import EngineStarter
from tests.helpers import run_world

slow = pytest.mark.slow

K, N = 2, 4
HASH_MODES = ("hash-only", "ephemeral+hash-only")
FAULTS: dict[str, dict[str, Any]] = {
    "evict": {"evict_rate": 0.5},
    "restart": {"restart_every": 3},
    "error": {"error_rate": 0.3},
    "delay": {"delay_ms": 50.0},
}


def point(mode: str, rollouts: int = K, turns: int = N, image_size: str = "64", **kw: Any) -> PointConfig:
    return PointConfig(mode=mode, rollouts=rollouts, turns=turns, image_size=image_size, **kw)


def engine_processes() -> list[psutil.Process]:
    # By name: a forked engine shares its fork server's command line (mmbench.launch)
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.name() == ENGINE_PROCESS_NAME
    ]


def backoff_total(retries: int) -> float:
    return sum(min(RETRY_FIRST_S * 2**i, RETRY_MAX_S) for i in range(retries))


@slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_in_every_mode_completes_with_no_wrong_results(
    engine_factory: EngineStarter, fault: str, tmp_path: Path
) -> None:
    totals: dict[str, Totals] = {}
    for mode in MODES:
        engine = engine_factory(**FAULTS[fault], allowed_media_dir=str(tmp_path))
        t0 = time.perf_counter()
        trajs = run_world(point(mode), engine.url, asset_dir=tmp_path / mode)
        elapsed = time.perf_counter() - t0
        tot = totals[mode] = Totals.of(trajs)
        assert tot.failed_rollouts == 0, (mode, tot.failures)
        assert tot.wrong_results == 0, mode
        assert all(len(t.steps) == N for t in trajs), mode
        assert sum(tot.bytes_per_turn) == tot.bytes_shipped
        # Every send after a turn's first is extra; without any, nothing is.
        assert (tot.extra_bytes > 0) == (tot.retries + tot.fallbacks > 0), mode
        assert tot.extra_bytes < tot.bytes_shipped
        stats = engine.stats()
        assert stats.bytes_received <= tot.bytes_shipped
        if fault == "restart":
            assert stats.restarts >= 1, mode
            assert stats.requests >= 3 * stats.restarts  # counted across incarnations
            assert engine.alive()
            if mode in HASH_MODES:
                assert tot.fallbacks > 0, mode  # the new incarnation's cache is empty
        else:
            assert stats.restarts == 0
            assert stats.bytes_received == tot.bytes_shipped  # every send reached the engine
        if fault == "delay":
            assert elapsed >= N * 0.05  # each rollout's N requests each wait 50 ms
            assert tot.retries == tot.fallbacks == 0
            assert stats.max_in_flight == K  # the rollouts' requests wait in the engine at once
        if fault == "evict":
            assert tot.retries == 0
            if mode in HASH_MODES:
                assert tot.fallbacks > 0 and stats.injected_evictions > 0
                assert stats.status_counts.get("500") == tot.fallbacks  # a miss: 500, as vLLM answers it
            else:
                assert tot.fallbacks == 0
        if fault == "error":
            assert stats.injected_errors == stats.status_counts["500"]
            # A 500 to a request with null slots is answered by the full resend, any other retried.
            assert tot.retries + tot.fallbacks == stats.injected_errors
        if mode not in HASH_MODES:
            assert tot.fallbacks == 0
    if fault == "error":
        assert sum(t.retries for t in totals.values()) > 0


@slow
def test_restarting_engine_is_stopped_with_every_incarnation() -> None:
    with EngineProcess(EngineConfig(restart_every=2)) as engine:
        first = engine.pid
        trajs = run_world(point("full", 1, 4), engine.url)
        assert Totals.of(trajs).failed_rollouts == 0
        stats = engine.stats()
        assert stats.restarts >= 1
        assert engine.pid != first
        assert not psutil.pid_exists(first)  # type: ignore[arg-type]
    assert not engine.alive()
    assert engine_processes() == []
    assert engine._supervisor is not None and not engine._supervisor.is_alive()


@slow
def test_engine_that_never_comes_back_fails_every_rollout_in_bounded_time(
    engine_factory: EngineStarter,
) -> None:
    # The supervisor restarts only an engine that exited after its N requests, not a killed one.
    engine = engine_factory(restart_every=1000)
    assert engine.pid is not None
    os.kill(engine.pid, signal.SIGKILL)
    t0 = time.perf_counter()
    trajs = run_world(point("hash-only", turns=3), engine.url)
    elapsed = time.perf_counter() - t0
    assert not engine.alive()
    assert engine.failure is not None and "code -9" in engine.failure
    with pytest.raises(MmbenchError, match="not running"):
        engine.stats()
    budget = point("hash-only").retry_budget
    assert elapsed < 60
    assert elapsed >= backoff_total(budget)
    tot = Totals.of(trajs)
    assert tot.failed_rollouts == K
    for traj in trajs:
        c = traj.counters
        assert c.failed and traj.steps == []
        assert c.retries == budget and c.requests == budget + 1
        assert c.failure is not None
        assert "turn 1" in c.failure and "ConnectError" in c.failure
        assert f"gave up after {budget} retries" in c.failure


@slow
def test_restart_mid_point_in_hash_only_through_the_harness() -> None:
    record = measure_point(point("hash-only", 2, 6, engine_restart_every=4, image_size="256"))
    assert record.status == "ok", record.cause
    assert record.engine.figures.restarts is not None and record.engine.figures.restarts >= 1
    assert record.traffic.fallbacks is not None and record.traffic.fallbacks > 0
    assert record.traffic.failed_rollouts == 0 and record.traffic.wrong_results == 0
    assert record.traffic.extra_bytes_shipped is not None and record.traffic.extra_bytes_shipped > 0
    assert record.traffic.retries is not None
    assert record.traffic.requests == 2 * 6 + record.traffic.fallbacks + record.traffic.retries
    # The engine's counters are summed over its incarnations.
    assert record.engine.figures.bytes_received is not None and record.traffic.bytes_shipped is not None
    assert record.engine.figures.bytes_received <= record.traffic.bytes_shipped
    assert engine_processes() == []


@slow
def test_a_spent_retry_budget_fails_the_point_with_its_cause() -> None:
    t0 = time.perf_counter()
    record = measure_point(point("full", 1, 2, engine_error_rate=1.0, retry_budget=2, image_size="256"))
    assert time.perf_counter() - t0 < 60
    assert record.status == "failed"
    assert record.cause is not None
    assert "1 rollout(s) failed" in record.cause
    assert "engine answered 500" in record.cause and "gave up after 2 retries" in record.cause
    assert (
        record.traffic.retries == 2 and record.traffic.failed_rollouts == 1 and record.traffic.requests == 3
    )
    assert record.engine.figures.injected_errors == 3


@slow
def test_a_point_whose_engine_is_killed_fails_with_a_clear_cause_in_bounded_time() -> None:
    killed: list[int] = []

    def kill_engine(worker_pid: int) -> None:
        for proc in engine_processes():
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)

    t0 = time.perf_counter()
    record = measure_point(
        point("hash-only", 2, 3, engine_restart_every=1000, image_size="256"),
        options=HarnessOptions(on_worker_start=kill_engine),
    )
    assert killed
    assert time.perf_counter() - t0 < 60
    assert record.status == "failed"
    assert record.cause is not None and "engine" in record.cause and "died" in record.cause
    assert engine_processes() == []
