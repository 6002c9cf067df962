"""The real-engine tier's fleet: 2 real vLLMs behind vllm-router, started, measured replica by
replica and stopped by mmbench (make test-vllm; needs the vLLM environment, as its other tests).

A point of every mode under sticky_least_loaded with the session header (each rollout keeps its
replica: hash-only works as on one engine), and hash-only under round robin without the router's
retries on vLLM replicas and on embedded ones: both answer a null slot the replica lacks with the
same retryable 500, so the client falls back on both alike. Each vLLM takes ~40 s to start; the two
of a point start together.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mmbench.measure.engines import Embedded, Vllm
from mmbench.measure.harness import HarnessOptions
from mmbench.sweep.loop import run_sweep
from mmbench.sweep.scenarios import Scenario
from tests.vllm.test_real_vllm import vllm_processes

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]
FLEET: dict[str, list[Any]] = {
    "rollouts": [2], "turns": [3], "image_size": ["256"], "codec": ["vllm"], "replicas": [2],
}  # fmt: skip


def routers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "vllm::router" or "vllm_router" in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    assert vllm_processes() == [] and routers() == [], "a vLLM or a router from before the test still runs"
    yield
    left = vllm_processes() + routers()
    for p in left:
        p.kill()
    assert left == [], f"processes left behind: {[p.pid for p in left]}"


def test_every_mode_on_two_vllm_replicas_with_sticky_sessions(tmp_path: Path) -> None:
    grid = {**FLEET, "mode": ["full", "hash-only", "raw"], "router_policy": ["sticky_least_loaded"],
            "session_header": ["on"]}  # fmt: skip
    scenario = Scenario("fleet", "2 vLLMs, sticky", grid)
    results = run_sweep(scenario, tmp_path / "out", HarnessOptions(engine=Vllm()))
    assert len(results.points) == 3
    for r in results.points:
        e = r.engine
        assert r.ok, (r.config.mode, r.cause)
        assert e.kind == "vllm" and e.replicas is not None and len(e.replicas) == 2
        assert not any(rep.died for rep in e.replicas)
        assert [rep.requests for rep in e.replicas] == [3, 3], r.config.mode  # one session each
        assert r.traffic.fallbacks == 0 and e.router.retries == 0, r.config.mode
        assert e.figures.bytes_received == sum(rep.bytes_received or 0 for rep in e.replicas)
        assert e.router.rss_bytes and e.router.version == "vllm-router 0.1.17"


def test_a_miss_is_the_same_retryable_500_on_vllm_and_embedded_replicas(tmp_path: Path) -> None:
    grid = {**FLEET, "rollouts": [3], "mode": ["hash-only"], "router_policy": ["round_robin"],
            "router_retries": ["off"]}  # fmt: skip
    scenario = Scenario("fleet-miss", "round robin, no retries", grid)
    got = {}
    for name, engine in (("vllm", Vllm()), ("embedded", Embedded())):
        (r,) = run_sweep(scenario, tmp_path / name, HarnessOptions(engine=engine)).points
        assert r.ok, (name, r.cause)
        assert r.traffic.fallbacks and r.traffic.fallbacks >= 1, name  # K=3 over 2: someone switches
        assert (r.traffic.fallback_error or "").startswith("HTTP 500"), (name, r.traffic.fallback_error)
        assert r.engine.replicas is not None
        assert sum("500:" in (rep.status_counts or "") for rep in r.engine.replicas) >= 1, name
        assert (r.engine.fleet.misses or 0) >= r.traffic.fallbacks, name  # vLLM's: its 500 answers
        got[name] = r
    assert not any(rep.died for rep in got["vllm"].engine.replicas or [])  # vLLM serves on after a miss


def test_a_sweeps_points_share_two_kept_vllm_replicas_each_behind_its_own_router(tmp_path: Path) -> None:
    """The pool keeps the 2 vLLMs for the points of one mode (each warmed, reset together between
    points) and every point starts its own router with its own policy."""
    grid: dict[str, list[Any]] = {
        **FLEET, "mode": ["hash-only"], "router_policy": ["sticky_least_loaded", "consistent_hash"],
        "session_header": ["on"],
    }  # fmt: skip
    scenario = Scenario("fleet-kept", "2 kept vLLMs", grid)
    results = run_sweep(scenario, tmp_path / "out", HarnessOptions(engine=Vllm()))
    first, second = results.points
    assert first.ok and second.ok, (first.cause, second.cause)
    assert (first.engine.reused, second.engine.reused) == (0, 1)
    assert first.engine.warmed and second.engine.warmed
    # one baseline for the kept pair: both replicas, once warm and reset
    assert first.engine.figures.rss_baseline_bytes == second.engine.figures.rss_baseline_bytes
    for r in (first, second):
        assert r.engine.router.flags and r.config.router_policy in r.engine.router.flags
        assert r.traffic.fallbacks == 0 and r.engine.fleet.misses == 0  # sticky: no null slot missed
        assert sum(rep.requests or 0 for rep in r.engine.replicas or []) == 6  # the point's own requests
