"""mmbench.world.engine.stats: one type for every engine's stats, and its arithmetic."""

from __future__ import annotations

from mmbench.world.engine.stats import EngineStats


def test_a_points_counters_are_counted_from_its_start_and_its_state_is_the_engines_now() -> None:
    ready = EngineStats(
        rss_bytes=100, requests=5, bytes_received=50, cache_queries=3, status_counts={"200": 5}
    )
    end = EngineStats(
        rss_bytes=180, requests=9, bytes_received=90, cache_queries=7, cache_bytes=64,
        status_counts={"200": 8, "500": 1},
    )  # fmt: skip
    point = end.since(ready)
    assert (point.requests, point.bytes_received, point.cache_queries) == (4, 40, 4)
    assert point.status_counts == {"200": 3, "500": 1}
    assert (point.rss_bytes, point.cache_bytes) == (180, 64)  # state, not counters


def test_an_unknown_counter_stays_unknown() -> None:
    vllm_like = EngineStats(rss_bytes=1, cache_hits=None, cache_misses=None)
    assert vllm_like.since(EngineStats(rss_bytes=1)).cache_hits is None


def test_incarnations_add_up_and_stats_survive_the_wire() -> None:
    first = EngineStats(rss_bytes=10, requests=3, status_counts={"200": 3}, pid=1)
    second = EngineStats(rss_bytes=20, requests=2, status_counts={"200": 1, "500": 1}, pid=2)
    total = second.plus(first)
    assert (total.requests, total.status_counts, total.rss_bytes, total.pid) == (
        5,
        {"200": 4, "500": 1},
        20,
        2,
    )
    assert EngineStats.decode(total.encode()) == total
    assert EngineStats.decode(b'{"detail": "Not Found"}') is None  # another server's JSON
    assert EngineStats.decode(b"not json") is None
