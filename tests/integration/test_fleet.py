"""A fleet end to end: embedded replicas behind the real vllm-router (PyPI 0.1.17, the dev extra),
started, measured replica by replica and stopped by mmbench. Tiny points (256x256 after the preset's
minimum, K <= 3, N = 3): about a second each, most of it the worker's start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engines import Embedded, External
from mmbench.measure.fleet import Fleet
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.record import PointRecord
from mmbench.world.engine.__main__ import PROCESS_NAME
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess
from mmbench.world.router import VllmRouter

slow = pytest.mark.slow
SMALL: dict[str, Any] = {"turns": 3, "image_size": "64", "replicas": 2}


def fleet_processes() -> list[psutil.Process]:
    """This test process's descendants that are a router or an engine."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name() in (PROCESS_NAME, "vllm::router") or "vllm_router" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture(autouse=True)
def nothing_left() -> Iterator[None]:
    yield
    left = fleet_processes()
    for p in left:
        p.kill()
    assert left == [], f"processes left behind: {[(p.pid, p.name()) for p in left]}"


def point(**overrides: Any) -> PointRecord:
    record = measure_point(PointConfig(**{**SMALL, **overrides}))
    assert record.ok, record.cause
    return record


def answers(counts: str | None) -> dict[str, int]:
    """ "200:16,500:6" -> {"200": 16, "500": 6}"""
    return {k: int(v) for k, v in (part.split(":") for part in (counts or "").split(",") if part)}


def received(record: PointRecord) -> list[int]:
    assert record.engine.replicas is not None
    return [r.bytes_received or 0 for r in record.engine.replicas]


@slow
def test_round_robin_without_retries_sends_null_slots_to_the_wrong_replica_and_the_client_resends() -> None:
    # K = 3 over 2 replicas: some rollout's turn 2 lands where its turn 1 did not
    r = point(mode="hash-only", rollouts=3, router_policy="round_robin", router_retries="off")
    t, e = r.traffic, r.engine
    assert e.replicas is not None and len(e.replicas) == 2
    assert t.fallbacks and t.fallbacks >= 1 and t.wrong_results == 0
    # every miss was a 500 (as vLLM answers it), the router did not retry, the client resent each
    refused = sum(answers(rep.status_counts).get("500", 0) for rep in e.replicas)
    assert e.fleet.misses == t.fallbacks == refused
    assert e.router.retries == 0 and e.router.requests == 3 * 3
    # the engine's figures are the fleet's, never one replica's
    assert e.figures.bytes_received == sum(received(r))
    assert all(b > 0 for b in received(r))
    # the replicas received what the client shipped, and the 16 bytes per request the router adds
    assert e.router.retried_bytes is not None and 0 <= e.router.retried_bytes <= 32 * (t.requests or 0)
    assert e.fleet.duplication is not None and e.fleet.duplication >= 1.0
    assert r.prediction.fleet_misses is not None and r.prediction.fleet_misses > 0
    assert e.router.version == "vllm-router 0.1.17" and "--disable-retries" in (e.router.flags or "")


@slow
def test_sticky_least_loaded_with_the_session_header_keeps_each_rollout_on_one_replica() -> None:
    r = point(mode="hash-only", rollouts=2, router_policy="sticky_least_loaded", session_header="on")
    e = r.engine
    assert r.traffic.fallbacks == 0 and e.fleet.misses == 0 and e.router.retries == 0
    assert e.replicas is not None and [rep.requests for rep in e.replicas] == [3, 3]  # one session each
    assert e.fleet.balance == 1.0 and e.fleet.duplication == 1.0
    assert r.prediction.fleet_misses == 0 and r.prediction.fallbacks == 0
    # the client ships and sends what it does with one engine
    one = point(mode="hash-only", rollouts=2, replicas=0, session_header="on")
    for name in ("bytes_shipped", "requests", "full_items_sent", "null_items_sent", "fallbacks"):
        assert getattr(r.traffic, name) == getattr(one.traffic, name), name


@slow
def test_a_replica_killed_mid_point_is_recorded_and_nothing_is_left_behind() -> None:
    """Raw media, round robin, replica 1 killed as turn 2 begins: the router sends the rest to the
    survivor, which preprocesses again what the dead one had."""
    # each request waits 100 ms in the engine, so that the kill lands as turn 2 begins
    r = point(
        mode="raw", rollouts=3, router_policy="round_robin", kill_replica_at_turn=2, engine_delay_ms=100
    )
    e = r.engine
    assert e.replicas is not None
    first, second = e.replicas
    assert first.died and "killed at turn 2" in (first.failure or "")
    assert not second.died and e.fleet.died == 1
    assert first.requests is not None and first.requests >= 1  # what it served before, kept
    assert r.traffic.failed_rollouts == 0 and r.traffic.fallbacks == 0
    preprocess = [rep.preprocess_calls or 0 for rep in e.replicas]
    assert sum(preprocess) == e.fleet.misses
    # the survivor preprocessed what it was sent; the dead replica's count is its last reading (what
    # it did after that died with it), so the sum is not held to the images' count
    assert preprocess[1] >= 3


def test_a_replicas_warm_up_is_a_small_point_of_its_own_without_the_kill(tmp_path: Any) -> None:
    """Each kept replica serves a warm-up (1 rollout, 2 turns, sent to it directly): a point's
    --kill-replica-at-turn (4 here, past the warm-up's 2 turns) is not the warm-up's."""
    from mmbench.measure.harness import _warm_up

    config = PointConfig(mode="hash-only", rollouts=8, turns=8, image_size="256", replicas=2,
                         router_policy="round_robin", kill_replica_at_turn=4)  # fmt: skip
    warm = _warm_up(HarnessOptions(), "fork", tmp_path / "sources", tmp_path)
    with Embedded().open(config, None, "fork") as engine:
        assert warm(engine, config, None) is None
        stats = engine.stats()
        assert stats is not None and stats.requests == 2 and engine.alive()


def test_a_fleet_that_cannot_start_stops_every_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mmbench.world.router.router_flags", lambda policy, retries: ["--policy", "nope"])
    handle = Fleet(Embedded()).open(PointConfig(**SMALL), None, "fork")
    with pytest.raises(MmbenchError, match="vllm-router exited"):
        handle.__enter__()
    assert all(r.handle.proc is None for r in handle._replicas)


def test_an_engine_url_that_is_a_router_is_noticed() -> None:
    with (
        EngineProcess(EngineConfig()) as a, EngineProcess(EngineConfig()) as b,
        VllmRouter([str(a.url), str(b.url)], "round_robin") as router,
    ):  # fmt: skip
        config = PointConfig(mode="full", rollouts=2, turns=3, image_size="64")
        r = measure_point(config, options=HarnessOptions(engine=External(str(router.url))))
        counts = (a.stats().bytes_received, b.stats().bytes_received)
    assert r.ok and all(counts)  # both engines served
    fleet = r.engine.fleet
    assert fleet.covered_share is not None and fleet.covered_share < 0.9
    assert fleet.note is not None and "not one engine" in fleet.note
    assert r.engine.figures.bytes_received is None  # one replica's figures are not the engine's
