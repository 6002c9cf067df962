"""Plain helpers shared by the tests (no fixtures here; those live in tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from mmbench.config import PointConfig
from mmbench.transports import make_transport
from mmbench.world.rollout import Trajectory, World


def run_world(config: PointConfig, url: str) -> list[Trajectory]:
    """Run one point's K rollouts against the engine at `url` with a fresh transport."""
    return World(config, make_transport(config.mode, config.sent_hashes_max)).run(url)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition until it holds; fail the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition, bounded by the deadline
