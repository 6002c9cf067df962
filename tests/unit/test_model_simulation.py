"""The driver simulated (mmbench.measure.model.simulation): renderer pools and the engine's cache."""

from __future__ import annotations

import dataclasses
import random

import pytest

from mmbench.errors import MmbenchError
from mmbench.facts import Mode, mode_of
from mmbench.measure.model import simulation, timing
from mmbench.measure.model.simulation import SimPoint, Timing, _closed_form, _Run, _SharedCpu, simulate
from mmbench.transports.registry import TRANSPORTS

# A mode's behaviour is its transport's flags (renders, stores_pixels, needs_engine_cache, media).
FULL, EPHEMERAL = TRANSPORTS["full"], TRANSPORTS["ephemeral"]
HASH, BOTH = TRANSPORTS["hash-only"], TRANSPORTS["ephemeral+hash-only"]
BIG = 1_000_000  # an engine cache (in items) that holds every image
T512 = timing(512 * 512, 1024 * 1536 * 4)  # the committed costs at 512x512, float32


def sim(mode: Mode, k: int = 4, n: int = 8, m: int = 1, pool: int = 1, cap: int = 32, engine: int = BIG,
        sent: int = 16_384, t: Timing = T512) -> simulation.DriverCounts:  # fmt: skip
    return simulate(SimPoint(mode, k, n, m, pool, cap, engine, sent, t))


@pytest.mark.parametrize("mode", [FULL, HASH, BOTH])
@pytest.mark.parametrize(
    ("k", "m", "pool", "cap"), [(4, 1, 1, 32), (8, 2, 16, 32), (3, 1, 4, 5), (5, 1, 3, 0)]
)
def test_the_closed_form_is_what_the_simulation_does_where_nothing_is_rederived(
    mode: object, k: int, m: int, pool: int, cap: int
) -> None:
    p = SimPoint(mode, k, 8, m, pool, cap, BIG, 16_384, T512)
    closed, simulated = _closed_form(p), _Run(p, random.Random(0)).run()
    assert closed == pytest.approx({name: simulated[name] for name in closed})


def test_one_renderer_caches_every_image_it_can_hold_and_hits_every_rederivation() -> None:
    # ephemeral, 4 x 8 images = 32 <= image_cache_max: every re-derivation is a hit
    c = sim(EPHEMERAL, k=4, n=8, cap=32)
    assert c.renderer_cache_misses == 32 and c.renderer_cache_entries == 32
    assert c.rederived == 4 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7) == c.renderer_cache_hits


def test_a_pool_keeps_one_image_in_several_caches() -> None:
    # 16 renderers that never evict (256 entries each): the 32 images are re-derived on later turns
    # by other renderers and cached there again (measured here: 119-125 entries)
    c = sim(EPHEMERAL, k=4, n=8, pool=16, cap=256)
    assert 100 < c.renderer_cache_entries < 144
    assert c.renderer_cache_entries == c.renderer_cache_misses  # nothing evicted
    one = sim(EPHEMERAL, k=4, n=8, pool=1, cap=256)
    assert one.renderer_cache_entries == 32


def test_small_caches_are_full_and_the_pool_holds_pool_times_cap() -> None:
    c = sim(EPHEMERAL, k=16, n=8, pool=4, cap=8)
    assert c.renderer_cache_entries == 4 * 8


def test_no_cache_means_every_render_preprocesses() -> None:
    c = sim(EPHEMERAL, k=3, n=4, cap=0)
    assert c.renderer_cache_hits == 0 and c.renderer_cache_entries == 0
    assert c.renderer_cache_misses == 3 * (1 + 2 + 3 + 4)


@pytest.mark.parametrize("mode", [HASH, BOTH])
def test_an_engine_cache_of_the_working_set_serves_every_null_slot(mode: object) -> None:
    c = sim(mode, k=8, n=8, engine=64)
    assert c.fallbacks == 0 and c.engine_cache_misses == 0
    assert c.engine_cache_hits == c.null_items_sent == 8 * 28
    assert c.requests == 64 and c.full_items_sent == 64


@pytest.mark.parametrize("mode", [HASH, BOTH])
def test_no_engine_cache_falls_back_on_every_turn_but_the_first(mode: object) -> None:
    c = sim(mode, k=8, n=8, engine=0)
    assert c.fallbacks == c.engine_cache_misses == 8 * 7
    assert c.requests == 64 + 56
    assert c.engine_cache_items == 0


def test_fallbacks_fall_as_the_engine_cache_grows() -> None:
    sizes = (8, 17, 34, 64)  # items: 0.05, 0.1, 0.2 and 0.4 GiB of 512x512 pixels
    fallbacks = [sim(HASH, k=8, n=8, engine=e).fallbacks for e in sizes]
    assert fallbacks == sorted(fallbacks, reverse=True)
    assert fallbacks[0] > 30 and fallbacks[-1] == 0


def test_a_resend_rederives_what_the_step_did_not_keep() -> None:
    # hash-only keeps the pixels it shipped in full: a resend's re-derivations that miss the renderer
    # cache stay in the trajectory; ephemeral+hash-only keeps none
    kept = sim(HASH, k=8, n=8, cap=0, engine=17)
    assert kept.fallbacks > 0 and kept.rederived > 0 and kept.rederived_kept == kept.rederived
    none = sim(BOTH, k=8, n=8, cap=0, engine=17)
    assert none.rederived > 0 and none.rederived_kept == 0


def test_a_small_sent_hash_lru_sends_more_in_full_and_never_fails() -> None:
    c = sim(HASH, k=4, n=8, sent=2)
    assert c.fallbacks == 0
    assert c.full_items_sent > 32


def test_a_prediction_is_deterministic() -> None:
    a = sim(HASH, k=8, n=8, engine=17)
    simulate.cache_clear()
    assert sim(HASH, k=8, n=8, engine=17) == a


def test_the_shared_cpu_gives_every_job_an_equal_share() -> None:
    cpu, done = _SharedCpu(), []
    cpu.add(1.0, lambda: done.append("short"))
    cpu.add(2.0, lambda: done.append("long"))
    assert cpu.next_in() == pytest.approx(2.0)  # two jobs at half speed: the short one after 2
    cpu.advance(2.0)
    cpu.pop_done()()
    assert cpu.next_in() == pytest.approx(1.0)  # the long one alone, 1 of its 2 left
    cpu.advance(1.0)
    cpu.pop_done()()
    assert done == ["short", "long"] and cpu.next_in() == float("inf")


def test_only_the_ratios_of_the_costs_set_the_order() -> None:
    slow = Timing(*(10 * x for x in dataclasses.astuple(T512)))
    assert sim(HASH, k=8, n=8, engine=17, t=slow) == sim(HASH, k=8, n=8, engine=17)


def test_hash_only_resends_overtake_and_thrash_more_than_those_that_rederive() -> None:
    # engine-cache.toml at 0.05 GiB (8 items): measured 51-54 fallbacks in hash-only, whose resends
    # need no render, and 40-43 in ephemeral+hash-only, whose resends queue for the renderer
    hash_only, both = sim(HASH, k=8, n=8, engine=8), sim(BOTH, k=8, n=8, engine=8)
    assert 47 <= hash_only.fallbacks <= 56 and 36 <= both.fallbacks <= 46
    assert hash_only.fallbacks > both.fallbacks + 5


def test_request_shapes_add_up_to_the_requests() -> None:
    c = sim(HASH, k=8, n=8, engine=17)
    assert sum(count for _, count in c.request_shapes) == pytest.approx(c.requests)
    assert sum(count * full for (_, _, full), count in c.request_shapes) == pytest.approx(c.full_items_sent)


def test_every_mode_is_read_from_the_transport_registry() -> None:
    assert all(mode_of(name) is transport for name, transport in TRANSPORTS.items())


def test_an_unknown_mode_is_one_line() -> None:
    with pytest.raises(MmbenchError, match=r"unknown mode 'nope'.*full"):
        mode_of("nope")


@pytest.mark.parametrize("cap", [0, 1, 3])
def test_a_build_cap_bounds_the_bodies_built_at_once_and_not_the_work(cap: int) -> None:
    p = SimPoint(FULL, 8, 4, 1, 1, 32, BIG, 16_384, T512, cap)
    run = _Run(p, random.Random(0))
    out = run.run()
    # capped: never more than the cap; uncapped, with renders one at a time: more than that
    assert run.building_max == cap if cap else run.building_max > 3
    assert out["requests"] == 8 * 4 and run.building == 0 and not run.gated


def test_the_simulated_time_adds_up_to_the_work_it_was_given() -> None:
    # full, K=2, N=2, no cache effects: 2 x (1 + 2) renders that miss... none: full keeps its pixels,
    # so 2 x 2 renders that miss, 2 x (1 + 2) items built and decoded, 4 requests
    t = Timing(render_miss=10.0, render_hit=0.0, build_item=5.0, build_fixed=0.0, engine_item=2.0,
               engine_decode=1.0, engine_fixed=0.0)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(simulation, "_COST_NOISE", 0.0)
        got = simulation.simulate_time.__wrapped__(SimPoint(FULL, 2, 2, 1, 1, 32, BIG, 16_384, t))
    assert got.client_cpu_s == pytest.approx((4 * 10.0 + 6 * 5.0) / 1000)
    assert got.engine_cpu_s == pytest.approx(6 * 3.0 / 1000)
    assert got.client_cpu_s <= got.wall_s <= got.client_cpu_s + got.engine_cpu_s
