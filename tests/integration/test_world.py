"""The world end to end: a real engine process, K rollouts of N turns, per transport mode.

(docs domain.md sections 2, 5, 6 and 7.) Images are small (qwen3-vl pads 64x64 up to 256x256:
grid 1x16x16, pixel_values (256, 1536) float32 = 1.5 MiB, 64 tokens), so each run is quick.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.rollout import Totals, Trajectory
from mmbench.transports import MODES
from mmbench.world.codec import item_wire_bytes
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess
from mmbench.world.geometry import get_geometry
from tests.conftest import EngineStarter
from tests.helpers import PROCESSED_MODES, run_world

slow = pytest.mark.slow

LAYOUT = get_geometry("qwen3-vl").layout(64, 64)
ITEM_WIRE = item_wire_bytes(LAYOUT.pixel_shape)  # one full item's bytes in the JSON body
ITEM_CACHE_BYTES = LAYOUT.pixel_bytes() + 3 * 8  # what the engine cache charges per item
HASH_MODES = ("hash-only", "ephemeral+hash-only")
REQUEST_OVERHEAD_MAX = 16_384  # JSON besides the items: tokens, hashes, placeholders


def point(mode: str = "full", rollouts: int = 2, turns: int = 4, **kw: object) -> PointConfig:
    return PointConfig(mode=mode, rollouts=rollouts, turns=turns, image_size="64", **kw)  # type: ignore[arg-type]


def pixel_arrays(traj: Trajectory) -> list:
    items = [it for s in traj.steps for it in s.sidecar.items]
    return [it.pixel_values for it in items if it.pixel_values is not None]


def test_geometry_of_the_test_images() -> None:
    assert LAYOUT.grid_thw == (1, 16, 16)
    assert LAYOUT.pixel_shape == (256, 1536)
    assert LAYOUT.tokens == 64


# --- stored data -------------------------------------------------------------------------


@slow
@pytest.mark.parametrize("mode", PROCESSED_MODES)
def test_stored_data_per_mode(engine_factory: EngineStarter, mode: str) -> None:
    k, n = 2, 4
    engine = engine_factory()
    trajs = run_world(point(mode, k, n), engine.url)
    assert [t.rollout for t in trajs] == list(range(k))
    for traj in trajs:
        assert not traj.counters.failed, traj.counters.failure
        assert len(traj.steps) == n
        # Every mode keeps every encoded source in the conversation.
        sources = traj.conversation.sources
        assert len(sources) == n
        assert len(set(sources)) == n
        assert all(src.startswith(b"\x89PNG") for src in sources)
        for t, step in enumerate(traj.steps, start=1):
            assert len(step.sidecar) == t
            assert len(step.sidecar.items) == len(step.sidecar.placeholders) == t
            # Hashes, placeholders and checksums are kept in every mode.
            assert step.sidecar.hashes == traj.steps[-1].sidecar.hashes[:t]
        arrays = pixel_arrays(traj)
        if mode == "full":
            assert len({id(a) for a in arrays}) == n
            for t, step in enumerate(traj.steps, start=1):
                assert all(it.has_pixels for it in step.sidecar.items)
                if t > 1:
                    prev = traj.steps[t - 2].sidecar.items
                    for i in range(t - 1):
                        assert step.sidecar.items[i].pixel_values is prev[i].pixel_values
        elif mode == "hash-only":
            assert len(arrays) == n
            assert len({id(a) for a in arrays}) == n
            for t, step in enumerate(traj.steps, start=1):
                # Step t keeps the pixels of the one image it shipped in full: its own.
                assert [it.has_pixels for it in step.sidecar.items] == [False] * (t - 1) + [True]
        else:  # ephemeral, ephemeral+hash-only
            assert arrays == []
    # Rollouts do not share images.
    hashes = [h for t in trajs for h in t.steps[-1].sidecar.hashes]
    assert len(set(hashes)) == k * n


# --- bytes shipped -----------------------------------------------------------------------


@slow
@pytest.mark.parametrize("mode", PROCESSED_MODES)
def test_items_and_bytes_shipped_per_mode(engine_factory: EngineStarter, mode: str) -> None:
    k, n = 2, 4
    engine = engine_factory()
    trajs = run_world(point(mode, k, n), engine.url)
    totals = Totals.of(trajs)
    for traj in trajs:
        c = traj.counters
        assert c.requests == n and c.fallbacks == 0
        if mode in HASH_MODES:
            assert (c.full_items_sent, c.null_items_sent) == (n, n * (n - 1) // 2)
            expected_turn_items = [1] * n
        else:
            assert (c.full_items_sent, c.null_items_sent) == (n * (n + 1) // 2, 0)
            expected_turn_items = list(range(1, n + 1))
        assert len(c.bytes_per_turn) == n
        assert sum(c.bytes_per_turn) == c.bytes_shipped
        for got, items in zip(c.bytes_per_turn, expected_turn_items, strict=True):
            assert items * ITEM_WIRE < got < items * ITEM_WIRE + REQUEST_OVERHEAD_MAX
    stats = engine.stats()
    assert totals.bytes_shipped == stats.bytes_received
    assert stats.requests == stats.ok == k * n
    assert stats.items_full == totals.full_items_sent
    assert stats.items_null == totals.null_items_sent
    assert stats.cache_hits == totals.null_items_sent


@slow
def test_full_over_hash_only_bytes_ratio(engine_factory: EngineStarter) -> None:
    n = 8
    shipped = {}
    for mode in ("full", "hash-only"):
        engine = engine_factory()
        cfg = PointConfig(mode=mode, rollouts=1, turns=n, image_size="256")
        totals = Totals.of(run_world(cfg, engine.url))
        assert totals.failed_rollouts == 0 and totals.wrong_results == 0
        assert totals.bytes_shipped == engine.stats().bytes_received
        shipped[mode] = totals.bytes_shipped
    ratio = shipped["full"] / shipped["hash-only"]
    assert ratio == pytest.approx((n + 1) / 2, rel=0.01)


# --- the engine cache --------------------------------------------------------------------


@slow
def test_engine_cache_smaller_than_working_set_falls_back(engine_factory: EngineStarter) -> None:
    k, n = 2, 6
    engine = engine_factory(cache_bytes=2 * ITEM_CACHE_BYTES + 1024)
    trajs = run_world(point("hash-only", k, n), engine.url)
    totals = Totals.of(trajs)
    assert totals.fallbacks > 0
    assert totals.failed_rollouts == 0, totals.failures
    assert totals.wrong_results == 0
    assert all(len(t.steps) == n for t in trajs)
    assert totals.requests == k * n + totals.fallbacks
    stats = engine.stats()
    assert stats.status_counts.get("500") == totals.fallbacks
    assert stats.cache_evictions > 0
    assert stats.bytes_received == totals.bytes_shipped


@slow
@pytest.mark.parametrize("mode", HASH_MODES)
def test_engine_cache_off_falls_back_on_every_reuse(engine_factory: EngineStarter, mode: str) -> None:
    k, n = 2, 4
    engine = engine_factory(cache_bytes=0)
    trajs = run_world(point(mode, k, n), engine.url)
    for traj in trajs:
        c = traj.counters
        assert not c.failed, c.failure
        assert len(traj.steps) == n
        assert c.wrong_results == 0
        assert c.fallbacks == n - 1
        assert c.requests == n + (n - 1)
        # Turn 1 is one full item, no fallback; turn 2 (the first reuse) falls back:
        # one full + one null, then both in full.
        assert c.bytes_per_turn[0] < 2 * ITEM_WIRE
        assert 3 * ITEM_WIRE < c.bytes_per_turn[1] < 3 * ITEM_WIRE + 2 * REQUEST_OVERHEAD_MAX
    stats = engine.stats()
    assert stats.status_counts == {"200": k * n, "500": k * (n - 1)}
    assert stats.bytes_received == Totals.of(trajs).bytes_shipped


# --- correctness in every mode -----------------------------------------------------------


@slow
@pytest.mark.parametrize("mode", MODES)
def test_no_wrong_results(engine_factory: EngineStarter, mode: str, tmp_path: Path) -> None:
    k, n = 2, 4
    engine = engine_factory(allowed_media_dir=str(tmp_path))
    totals = Totals.of(run_world(point(mode, k, n), engine.url, asset_dir=tmp_path))
    assert totals.wrong_results == 0
    assert totals.fallbacks == 0
    assert totals.requests == k * n
    assert totals.failed_rollouts == 0
    assert totals.bytes_per_turn and len(totals.bytes_per_turn) == n


# --- an engine that refuses --------------------------------------------------------------


@slow
@pytest.mark.parametrize("mode", ["full", "hash-only"])
def test_engine_refusing_everything_fails_rollouts_without_raising(
    engine_factory: EngineStarter, mode: str
) -> None:
    k = 2
    engine = engine_factory(max_body_bytes=100)
    trajs = run_world(point(mode, k, 3), engine.url)
    totals = Totals.of(trajs)
    assert totals.failed_rollouts == k
    for traj in trajs:
        assert traj.counters.failed
        assert traj.steps == []
        assert "turn 1" in traj.counters.failure
        assert "413" in traj.counters.failure
    assert engine.stats().status_counts == {"413": k}


@slow
def test_engine_refusing_a_later_turn_keeps_the_earlier_steps(
    engine_factory: EngineStarter,
) -> None:
    # Room for one full item per body, not two: full fails at turn 2, hash-only never does.
    engine = engine_factory(max_body_bytes=ITEM_WIRE + 3 * REQUEST_OVERHEAD_MAX)
    full = run_world(point("full", 1, 3), engine.url)[0]
    assert full.counters.failed
    assert len(full.steps) == 1
    assert "turn 2" in full.counters.failure and "413" in full.counters.failure
    hash_only = run_world(point("hash-only", 1, 3), engine.url)[0]
    assert not hash_only.counters.failed, hash_only.counters.failure
    assert len(hash_only.steps) == 3


# --- PointConfig validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"rollouts": 0}, r"rollouts.*\b0\b"),
        ({"turns": 0}, r"turns.*\b0\b"),
        ({"mode": "nope"}, r"'nope'"),
        ({"model": "gpt-9"}, r"'gpt-9'"),
        ({"image_size": "0"}, r"\b0\b"),
        ({"image_size": "100000"}, r"100000"),
        ({"image_size": "1x300"}, r"1x300"),
    ],
    ids=["rollouts-0", "turns-0", "mode", "model", "size-0", "size-100000", "aspect-300"],
)
def test_point_config_validation(kwargs: dict, pattern: str) -> None:
    with pytest.raises(MmbenchError) as info:
        PointConfig(**kwargs)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_point_config_defaults_are_valid() -> None:
    cfg = PointConfig()
    assert cfg.image_wh == (512, 512)
    assert point("hash-only").image_wh == (64, 64)


# --- the renderer cache ------------------------------------------------------------------


@slow
@pytest.mark.parametrize(("cache_max", "hits", "misses"), [(32, 6, 4), (0, 0, 10)])
def test_ephemeral_rederives_through_the_renderer_cache(
    engine_factory: EngineStarter, cache_max: int, hits: int, misses: int
) -> None:
    n = 4
    engine = engine_factory()
    totals = Totals.of(run_world(point("ephemeral", 1, n, image_cache_max=cache_max), engine.url))
    assert totals.rederived == 0 + 1 + 2 + 3
    assert totals.cache_hits == hits
    assert totals.cache_misses == misses
    assert totals.wrong_results == 0


# --- the engine process ------------------------------------------------------------------


@slow
def test_engine_process_is_gone_after_the_context_exits() -> None:
    with EngineProcess(EngineConfig()) as engine:
        proc, pid = engine.proc, engine.pid
        assert proc is not None and pid is not None
        assert engine.alive() and psutil.pid_exists(pid)
        assert engine.stats().requests == 0
    assert proc.poll() is not None
    assert not psutil.pid_exists(pid)
    assert not engine.alive()


@slow
def test_engine_process_is_gone_when_the_body_raises() -> None:
    proc = pid = None
    with pytest.raises(RuntimeError, match="boom"), EngineProcess(EngineConfig()) as engine:
        proc, pid = engine.proc, engine.pid
        assert engine.alive()
        raise RuntimeError("boom")
    assert proc is not None and pid is not None
    assert proc.poll() is not None
    assert not psutil.pid_exists(pid)


@slow
def test_engine_factory_starts_ready_engines(engine_factory: EngineStarter) -> None:
    a = engine_factory(cache_bytes=123)
    b = engine_factory(cache_bytes=0)
    assert a.url != b.url
    assert a.stats().cache_capacity_bytes == 123
    assert b.stats().cache_capacity_bytes == 0
