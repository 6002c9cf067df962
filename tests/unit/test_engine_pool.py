"""mmbench.measure.engine_pool on stand-in engines: started once per configuration, reset between
points, stopped when the configuration changes, when it dies, on failure and at the end."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engine_pool import EnginePool


class FakeEngine:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name, self.alive_now, self.readings = log, name, True, 0

    def __enter__(self) -> FakeEngine:
        self.log.append(f"start {self.name}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append(f"stop {self.name}")

    def reset(self) -> None:
        self.log.append(f"reset {self.name}")

    def alive(self) -> bool:
        return self.alive_now

    def stats(self) -> Any:
        self.readings += 1
        return ("stats of", self.name, self.readings)


class FakeChoice:
    """Keys a point by its engine_cache_gb: points that share it share an engine."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.opened: list[FakeEngine] = []

    def key(self, config: PointConfig, file_assets: bool) -> Hashable:
        return (config.engine_cache_gb, file_assets)

    def describe(self) -> str:
        return "fake"

    def open_reusable(self, config: PointConfig, assets: Path | None) -> FakeEngine:
        engine = FakeEngine(self.log, f"{config.engine_cache_gb:g}")
        self.opened.append(engine)
        return engine


def lease(pool: EnginePool, choice: FakeChoice, gb: float, file_assets: bool = False) -> Any:
    return pool.lease(choice, PointConfig(engine_cache_gb=gb), file_assets)  # type: ignore[arg-type]


def test_points_that_share_a_configuration_share_one_engine_reset_between_them() -> None:
    choice, started = FakeChoice(), []
    pool = EnginePool(on_start=started.append)
    for expected in (0, 1, 2):
        with lease(pool, choice, 4.0) as got:
            assert got.reused == expected
    with lease(pool, choice, 1.0) as got:  # another configuration: the first engine stops first
        assert got.reused == 0
    pool.close()
    assert choice.log == ["start 4", "reset 4", "reset 4", "stop 4", "start 1", "stop 1"]
    assert started == ["fake", "fake"] and pool.starts == 2


def test_a_dead_engine_is_replaced_for_the_next_point() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with lease(pool, choice, 4.0):
        choice.opened[-1].alive_now = False  # it died during the point
    with lease(pool, choice, 4.0) as got:
        assert got.reused == 0
    pool.close()
    assert choice.log == ["start 4", "stop 4", "start 4", "stop 4"]


def test_a_point_that_raises_stops_its_engine() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with pytest.raises(KeyboardInterrupt), lease(pool, choice, 4.0):
        raise KeyboardInterrupt
    assert choice.log == ["start 4", "stop 4"]
    pool.close()  # nothing left to stop
    assert choice.log == ["start 4", "stop 4"]


def test_a_point_may_give_its_engine_up() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with lease(pool, choice, 4.0) as got:
        got.keep = False
    assert choice.log == ["start 4", "stop 4"]


def test_raw_files_asset_directory_lives_with_its_engine_and_is_emptied_between_points() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with lease(pool, choice, 4.0, file_assets=True) as first:
        assert first.assets is not None and first.assets.is_dir()
        (first.assets / "img-0.png").write_bytes(b"x")
        (first.assets / "sub").mkdir()
    with lease(pool, choice, 4.0, file_assets=True) as second:
        assert second.assets == first.assets and list(second.assets.iterdir()) == []
    pool.close()
    assert not first.assets.exists()


# --- warm-ups: an engine serves each mode once before that mode's first point (see the module)


def warm_lease(pool: EnginePool, choice: FakeChoice, mode: str, warm_up: Any, gb: float = 4.0) -> Any:
    return pool.lease(choice, PointConfig(mode=mode, engine_cache_gb=gb), False, warm_up)  # type: ignore[arg-type]


def recording_warm_up(choice: FakeChoice, cause: str | None = None, kills: bool = False) -> Any:
    def warm_up(engine: FakeEngine, config: PointConfig, assets: Path | None) -> str | None:
        choice.log.append(f"warm {config.mode}")
        if kills:
            engine.alive_now = False
        return cause

    return warm_up


def test_an_engine_is_warmed_once_per_mode_then_reset_before_the_baseline() -> None:
    choice = FakeChoice()
    pool = EnginePool(share_modes=True)  # an engine for every mode: warmed for each
    warm_up = recording_warm_up(choice)
    seen = []
    for mode in ("full", "full", "raw", "full"):
        with warm_lease(pool, choice, mode, warm_up) as got:
            seen.append((got.reused, got.warmed))
    pool.close()
    assert seen == [(0, True), (1, True), (2, True), (3, True)]
    assert choice.log == [
        "start 4", "warm full", "reset 4",  # warmed for full, reset before the first point's baseline
        "reset 4",  # the second full point: reset only
        "reset 4", "warm raw", "reset 4",  # raw's first point: reset, warmed for raw, reset
        "reset 4", "stop 4",
    ]  # fmt: skip


def test_a_fresh_pool_starts_warms_and_stops_an_engine_for_every_point() -> None:
    choice = FakeChoice()
    pool = EnginePool(fresh=True)
    warm_up = recording_warm_up(choice)
    for _ in range(2):
        with warm_lease(pool, choice, "full", warm_up) as got:
            assert (got.reused, got.warmed) == (0, True)
    assert choice.log == ["start 4", "warm full", "reset 4", "stop 4"] * 2


def test_a_failed_warm_up_leaves_the_point_on_an_engine_not_warmed() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with warm_lease(pool, choice, "hash-only", recording_warm_up(choice, cause="worker exited")) as got:
        assert not got.warmed
    pool.close()
    assert choice.log == ["start 4", "warm hash-only", "reset 4", "stop 4"]


def test_a_warm_up_that_kills_the_engine_gets_the_point_a_new_one() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    warm_up = recording_warm_up(choice, cause="engine died", kills=True)
    with warm_lease(pool, choice, "hash-only", warm_up) as got:
        assert got.engine is choice.opened[-1] and got.engine.alive() and not got.warmed
    pool.close()
    assert choice.log == ["start 4", "warm hash-only", "stop 4", "start 4", "stop 4"]


def test_an_engine_whose_reset_fails_is_replaced() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    with lease(pool, choice, 4.0):
        pass

    def broken_reset() -> None:
        raise MmbenchError("vLLM answered POST /reset_mm_cache with 500")

    choice.opened[-1].reset = broken_reset  # type: ignore[method-assign]
    with lease(pool, choice, 4.0) as got:
        assert got.reused == 0 and got.engine is choice.opened[-1]
    pool.close()
    assert choice.log == ["start 4", "stop 4", "start 4", "stop 4"]


def test_an_engine_has_one_baseline_read_once_warm_before_its_first_point() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    warm_up = recording_warm_up(choice)
    baselines = []
    for mode in ("full", "raw", "full"):
        with warm_lease(pool, choice, mode, warm_up) as got:
            baselines.append(got.baseline)
    with warm_lease(pool, choice, "full", warm_up, gb=1.0) as got:  # another engine, its own baseline
        baselines.append(got.baseline)
    pool.close()
    assert baselines == [("stats of", "4", 1)] * 3 + [("stats of", "1", 1)]
    assert choice.log[:3] == ["start 4", "warm full", "reset 4"]  # read after these


def test_an_engine_serves_one_mode_unless_the_pool_shares_it_between_modes() -> None:
    for share, starts in ((False, ["start 4", "start 4"]), (True, ["start 4"])):
        choice = FakeChoice()
        pool = EnginePool(share_modes=share)
        for mode in ("full", "full", "raw", "raw"):
            with pool.lease(choice, PointConfig(mode=mode), False):  # type: ignore[arg-type]
                pass
        pool.close()
        assert [e for e in choice.log if e.startswith("start")] == starts, share


def test_a_point_below_the_largest_load_its_engine_served_gets_a_fresh_engine() -> None:
    choice = FakeChoice()
    pool = EnginePool()
    for k in (2, 4, 4, 3):  # a search that steps back down
        with pool.lease(choice, PointConfig(rollouts=k), False):  # type: ignore[arg-type]
            pass
    pool.close()
    assert choice.log == ["start 4", "reset 4", "reset 4", "stop 4", "start 4", "stop 4"]


class FakeReplica(FakeEngine):
    def stats(self, trim: bool = False) -> Any:
        from mmbench.world.engine.stats import EngineStats

        return EngineStats(rss_bytes=100)


class FakeReplicas(FakeChoice):
    def open_reusable(self, config: PointConfig, assets: Path | None) -> FakeEngine:
        engine = FakeReplica(self.log, f"r{len(self.opened) + 1}")
        self.opened.append(engine)
        return engine


def test_a_fleets_replicas_are_kept_together_and_reset_together_between_points() -> None:
    """A fleet's replicas are one engine for the pool (each point starts its own router in front of
    them: mmbench.measure.fleet.FleetHandle.over); a dead replica gets the next point a new set."""
    from mmbench.measure.fleet import ReplicaSet

    choice, started = FakeReplicas(), []
    pool = EnginePool(on_start=started.append)
    fleet = PointConfig(replicas=2, router_policy="round_robin")
    for expected in (0, 1):
        with pool.lease(choice, fleet, False) as got:  # type: ignore[arg-type]
            assert isinstance(got.engine, ReplicaSet) and got.reused == expected
            assert got.baseline.rss_bytes == 200  # both replicas'
    choice.opened[0].alive_now = False  # a replica killed by its point
    with pool.lease(choice, fleet, False) as got:  # type: ignore[arg-type]
        assert got.reused == 0 and [h.name for h in got.engine.handles] == ["r3", "r4"]
    with pool.lease(choice, PointConfig(), False) as got:  # type: ignore[arg-type]
        assert not isinstance(got.engine, ReplicaSet)  # one engine: another key
    pool.close()
    # the replicas start and reset in parallel: within a run of one verb, in any order
    runs = [sorted(g) for _, g in itertools.groupby(choice.log, key=lambda e: e.split()[0])]
    assert [e for run in runs for e in run] == [
        "start r1", "start r2", "reset r1", "reset r2", "stop r1", "stop r2", "start r3", "start r4",
        "stop r3", "stop r4", "start r5", "stop r5",
    ]  # fmt: skip
    assert started == ["2 x fake", "2 x fake", "fake"]


def test_the_pool_says_what_its_kept_engine_holds() -> None:
    choice = FakeReplicas()
    pool = EnginePool()
    assert pool.held_bytes() == 0
    with pool.lease(choice, PointConfig(replicas=2), False):  # type: ignore[arg-type]
        pass
    assert pool.held_bytes() == 200  # both replicas' RSS, kept for the next point
    pool.close()
    assert pool.held_bytes() == 0
