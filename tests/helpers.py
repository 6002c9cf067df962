"""Plain helpers shared by the tests (no fixtures here; those live in tests/conftest.py)."""

from __future__ import annotations

from mmbench.config import PointConfig
from mmbench.transports import make_transport
from mmbench.world.rollout import Trajectory, World


def run_world(config: PointConfig, url: str) -> list[Trajectory]:
    """Run one point's K rollouts against the engine at `url` with a fresh transport."""
    return World(config, make_transport(config.mode, config.sent_hashes_max)).run(url)
