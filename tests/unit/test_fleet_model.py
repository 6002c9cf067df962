"""The fleet's model (mmbench.measure.model.fleet) and its arithmetic (mmbench.measure.fleet): what
each router policy does to hash-only's null slots, raw media's preprocessing and the caches."""

from __future__ import annotations

import math

import pytest

from mmbench.config import PointConfig
from mmbench.measure.fleet import covered, sum_stats
from mmbench.measure.model import predict
from mmbench.measure.model.fleet import fleet_counts
from mmbench.record import EngineFigures, Traffic
from mmbench.world.engine.stats import EngineStats, KindUsage

K, N = 8, 8
LATER = K * (N - 1)  # requests that carry null slots


def hash_only(**fleet: object) -> PointConfig:
    return PointConfig(mode="hash-only", rollouts=K, turns=N, **fleet)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["consistent_hash", "sticky_least_loaded"])
@pytest.mark.parametrize("retries", ["on", "off"])
def test_a_sticky_session_never_misses(policy: str, retries: str) -> None:
    c = fleet_counts(hash_only(replicas=2, router_policy=policy, session_header="on", router_retries=retries))
    assert c.misses == c.fallbacks == c.router_retries == 0
    assert c.cached_items == c.unique_items == K * N  # each item cached once


@pytest.mark.parametrize("replicas", [2, 4])
def test_round_robin_misses_about_r_minus_1_over_r_of_the_later_turns(replicas: int) -> None:
    c = fleet_counts(hash_only(replicas=replicas, router_policy="round_robin", router_retries="off"))
    expected = LATER * (replicas - 1) / replicas
    assert 0.8 * expected <= c.misses <= 1.2 * expected  # more: a resend scatters its items further
    assert c.fallbacks == c.misses and c.router_retries == 0  # without retries, each miss is a resend
    assert c.cached_items > c.unique_items  # the resends cache items a second time


def test_cache_aware_keeps_no_rollout_in_place_as_measured() -> None:
    """vllm-router 0.1.17's cache_aware spread hash-only's turns like a random pick (docs/fleet.md:
    23 and 28 of 56 later turns fell back at K = 8, retries off): modelled as random."""
    ca = fleet_counts(hash_only(replicas=2, router_policy="cache_aware", router_retries="off"))
    assert 0.4 * LATER <= ca.fallbacks <= 0.6 * LATER


def test_the_routers_retries_rescue_round_robins_misses_and_not_consistent_hashs() -> None:
    rr = fleet_counts(hash_only(replicas=2, router_policy="round_robin"))
    assert rr.first_misses > 0 and rr.fallbacks < 0.1 * rr.first_misses  # the retry finds the other replica
    ch = fleet_counts(hash_only(replicas=2, router_policy="consistent_hash"))  # no header: the body's hash
    assert ch.fallbacks > 0.5 * ch.first_misses  # its retries go to the same replica
    assert ch.router_retries > 3 * ch.fallbacks


def test_over_four_replicas_the_routers_retries_rescue_most_of_round_robins_misses() -> None:
    on = fleet_counts(hash_only(replicas=4, router_policy="round_robin"))
    off = fleet_counts(hash_only(replicas=4, router_policy="round_robin", router_retries="off"))
    assert off.router_retries == 0 and on.router_retries > 0
    assert on.fallbacks < off.fallbacks


def test_round_robins_retries_land_on_any_replica() -> None:
    """The router's round-robin counter is shared by the concurrent requests: a retry takes it where
    they left it, so at R = 2 it misses again half the time (measured: 44 and 53 misses of 25-28
    first misses, docs/fleet.md), where "the other replica" would miss once."""
    rr = fleet_counts(hash_only(replicas=2, router_policy="round_robin"))
    assert 1.6 * rr.first_misses <= rr.misses <= 2.4 * rr.first_misses
    assert rr.router_retries == pytest.approx(rr.misses - rr.fallbacks)


def test_a_killed_replica_moves_its_sessions_once_its_circuit_opens() -> None:
    """As measured (results/fleet/kill): replica 1 of 2 killed at turn 4, sticky sessions with the
    header. Its 4 rollouts' requests fail there until 10 failures open its circuit (2 requests x 5
    attempts: the router's --retry-max-retries 5 counts attempts), then move: hash-only resends each
    in full (4 fallbacks, 10 misses, 16 router retries); full retries the 2 the router gave up on
    (2 client retries); no rollout fails."""
    kill = {"replicas": 2, "router_policy": "sticky_least_loaded", "session_header": "on",
            "kill_replica_at_turn": 4}  # fmt: skip
    h = fleet_counts(hash_only(**kill))
    assert (h.fallbacks, h.misses, h.router_retries, h.failed_rollouts) == (4, 10, 16, 0)
    full = fleet_counts(PointConfig(mode="full", rollouts=K, turns=N, **kill))  # type: ignore[arg-type]
    assert (full.client_retries, full.router_retries, full.failed_rollouts) == (2, 8, 0)


def test_without_the_breaker_a_killed_replicas_sessions_fail() -> None:
    """--router-retries off disables the circuit breaker too: the dead replica stays in rotation and
    the sessions it held fail once the client's retry budget is spent (measured: 4 of 8 rollouts
    failed, full and hash-only; the router's health check, slower than the point, is not modelled)."""
    off = fleet_counts(hash_only(replicas=2, router_policy="sticky_least_loaded", session_header="on",
                                 router_retries="off", kill_replica_at_turn=4))  # fmt: skip
    assert off.failed_rollouts == K / 2
    rr = fleet_counts(hash_only(replicas=2, router_policy="round_robin", router_retries="off",
                                kill_replica_at_turn=4))  # fmt: skip
    assert rr.failed_rollouts < 1  # round robin's next pick is the survivor


def test_every_circuit_open_fails_rollouts_only_with_the_breaker() -> None:
    """consistent_hash without the header, retries on, R = 4: every circuit opened and the point failed
    (measured); the model predicts failed rollouts there, and none with the breaker off."""
    on = fleet_counts(hash_only(replicas=4, router_policy="consistent_hash", router_retries="on"))
    off = fleet_counts(hash_only(replicas=4, router_policy="consistent_hash", router_retries="off"))
    assert on.failed_rollouts > 1 and off.failed_rollouts == 0
    sticky = fleet_counts(hash_only(replicas=4, router_policy="consistent_hash", session_header="on"))
    assert sticky.failed_rollouts == 0


def test_raw_media_is_preprocessed_once_per_replica_that_sees_it() -> None:
    config = PointConfig(mode="raw", rollouts=K, turns=N, replicas=2, router_policy="round_robin")
    c = fleet_counts(config)
    assert c.misses == c.fallbacks == 0
    assert K * N < c.preprocess_calls <= 2 * K * N
    sticky = fleet_counts(PointConfig(mode="raw", rollouts=K, turns=N, replicas=2,
                                      router_policy="sticky_least_loaded", session_header="on"))  # fmt: skip
    assert sticky.preprocess_calls == K * N


def test_the_prediction_adds_the_resends_to_the_bytes_shipped() -> None:
    one = predict(hash_only(), 100_000.0)
    fleet = predict(hash_only(replicas=2, router_policy="round_robin", router_retries="off"), 100_000.0)
    assert one.fleet_misses is None and fleet.fleet_misses is not None and fleet.fleet_misses > 0
    assert fleet.fallbacks == fleet.fleet_misses
    assert fleet.bytes_shipped > one.bytes_shipped
    sticky = predict(hash_only(replicas=2, router_policy="consistent_hash", session_header="on"), 100_000.0)
    assert sticky.bytes_shipped == one.bytes_shipped and sticky.fallbacks == 0


def test_replicas_stats_add_up() -> None:
    a = EngineStats(rss_bytes=100, requests=3, bytes_received=10, cache_bytes=5, status_counts={"200": 3},
                    kinds={"worker": KindUsage(7, 1.0)})  # fmt: skip
    b = EngineStats(rss_bytes=200, requests=2, bytes_received=20, cache_bytes=None,
                    status_counts={"200": 1, "500": 1}, kinds={"worker": KindUsage(8, 2.0)})  # fmt: skip
    s = sum_stats([a, b])
    assert (s.rss_bytes, s.requests, s.bytes_received, s.cache_bytes) == (300, 5, 30, 5)
    assert s.status_counts == {"200": 4, "500": 1}
    assert s.kinds == {"worker": KindUsage(15, 3.0)} and s.pid is None


def test_an_engine_whose_counts_cover_half_the_clients_bytes_is_not_one_engine() -> None:
    half = covered(EngineFigures(bytes_received=50), Traffic(bytes_shipped=100), "http://x")
    assert half.covered_share == 0.5 and half.note is not None and "not one engine" in half.note
    whole = covered(EngineFigures(bytes_received=100), Traffic(bytes_shipped=100), "http://x")
    assert whole.covered_share == 1.0 and whole.note is None
    assert covered(EngineFigures(), Traffic(bytes_shipped=100), "http://x").covered_share is None
    assert not math.isnan(half.covered_share or 0.0)


def test_replicas_that_answer_slowly_let_a_turns_failures_open_their_circuits() -> None:
    """vLLM on these CPUs serves in seconds, after a turn's failed retries: measured, round robin
    over 2 vLLMs opened both circuits and 4 rollouts failed, where embedded replicas (0.1 s a
    success) never opened one. The model's `slow` counts a turn's failures before its successes."""
    config = hash_only(replicas=2, router_policy="round_robin")
    fast, slow = fleet_counts(config), fleet_counts(config, slow=True)
    assert fast.failed_rollouts < 0.1 and slow.failed_rollouts > fast.failed_rollouts
    assert predict(config, 100_000.0, engine="vllm").failed_rollouts == round(slow.failed_rollouts)


def test_with_every_circuit_open_the_routers_attempts_still_count_as_retries() -> None:
    """Measured: 333 and 368 router retries where every circuit opened (vLLM at R = 2, embedded at 4):
    the router makes its attempts with no worker to send them to, and the client retries each."""
    c = fleet_counts(hash_only(replicas=4, router_policy="consistent_hash"), trials=16)
    assert c.failed_rollouts > 0 and c.router_retries > 4 * c.client_retries * 0.9


def test_a_vllm_replicas_misses_are_its_500_answers() -> None:
    """vLLM counts no cache miss of its own for a null slot it lacks (it answers 500): the fleet's
    misses are what each replica reported, whichever way it counts them."""
    from mmbench.measure.fleet import FleetReading, sections
    from mmbench.record import ReplicaFigures, RouterFigures

    replicas = [ReplicaFigures(requests=10, cache_misses=0), ReplicaFigures(requests=12, cache_misses=0)]
    reading = FleetReading(replicas, RouterFigures(), [None, None], null_misses=[3, 4])
    _, _, fleet = sections(reading, Traffic(bytes_shipped=1), hash_only(replicas=2))
    assert fleet.misses == 7
    plain = FleetReading(replicas, RouterFigures())
    _, _, fleet = sections(plain, Traffic(bytes_shipped=1), hash_only(replicas=2))
    assert fleet.misses == 0  # older readings: the replicas' own cache misses
