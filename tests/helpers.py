"""Plain helpers shared by the tests (no fixtures here; those live in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from mmbench import launch
from mmbench.config import PointConfig
from mmbench.migrations import v5_point
from mmbench.results import PointRecord
from mmbench.rollout import RolloutDriver, Trajectory
from mmbench.transports import TRANSPORTS, make_transport

# A point's traffic figures (dotted record paths) that depend on neither timing nor which engine or
# machine served it: the same point gives them to the byte.
TRAFFIC_FIGURES = (
    "traffic.bytes_shipped",
    "traffic.bytes_per_turn",
    "traffic.requests",
    "traffic.full_items_sent",
    "traffic.null_items_sent",
    "traffic.wrong_results",
)
PROCESSED_MODES = tuple(m for m, t in TRANSPORTS.items() if t.renders)
RAW_MODES = tuple(m for m, t in TRANSPORTS.items() if not t.renders)


def flat_record(**fields: Any) -> PointRecord:
    """A record stated in v5's flat field names (`mode=..., retained_live_bytes=...`; config fields
    left out take PointConfig's defaults), built through the migration that old files take
    (mmbench.migrations.V5_PATHS says where each name lives now)."""
    return PointRecord.from_dict(v5_point({**PointConfig().to_dict(), **fields}), "test record")


def run_world(config: PointConfig, url: str, asset_dir: Path | None = None) -> list[Trajectory]:
    """Run one point's K rollouts against the engine at `url` with a fresh transport; raw-media
    items are then checked as the worker checks them (each rollout's mismatches in its counters)."""
    world = RolloutDriver(config, make_transport(config.mode, config.sent_hashes_max), asset_dir=asset_dir)
    trajectories = world.run(url)
    for t in trajectories:
        t.counters.wrong_results += world.count_wrong_media(world.media_checks([t]))
    return trajectories


def least_live_until(
    measure: Callable[[], Mapping[str, PointRecord]],
    holds: Callable[[dict[str, PointRecord]], bool],
    first: Mapping[str, PointRecord] | None = None,
    rounds: int = 3,
) -> dict[str, PointRecord]:
    """Each key's record with the least retained (live) reading, after measuring rounds (`first`
    counts as one) until `holds` is true of them or `rounds` are spent. The noise of a trimmed RSS
    reading only ever adds (memory a trim left resident), so the least reading is the one to judge."""
    seen: dict[str, list[PointRecord]] = {}
    done = first
    for _ in range(rounds):
        for key, record in (done if done is not None else measure()).items():
            assert record.status == "ok", record.cause
            assert record.client.retained_live_bytes is not None
            seen.setdefault(key, []).append(record)
        done = None
        least = {k: min(v, key=lambda r: r.client.retained_live_bytes or 0) for k, v in seen.items()}
        if holds(least):
            break
    return least


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition until it holds; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition, bounded by the deadline


def leftover_processes() -> list[psutil.Process]:
    """This process's descendants still running, except its fork servers (mmbench.launch keeps them
    for the whole session on purpose): any worker or engine left behind, forked or started fresh."""
    servers = launch.server_pids()
    return [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.pid not in servers]
