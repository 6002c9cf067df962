"""Plain helpers shared by the tests (no fixtures here; those live in tests/conftest.py)."""

from __future__ import annotations

import psutil

from mmbench import launch
from mmbench.config import PointConfig
from mmbench.transports import make_transport
from mmbench.world.rollout import Trajectory, World


def run_world(config: PointConfig, url: str) -> list[Trajectory]:
    """Run one point's K rollouts against the engine at `url` with a fresh transport."""
    return World(config, make_transport(config.mode, config.sent_hashes_max)).run(url)


def leftover_processes() -> list[psutil.Process]:
    """This process's descendants still running, except its fork servers (mmbench.launch keeps them
    for the whole session on purpose): any worker or engine left behind, forked or started fresh."""
    servers = launch.server_pids()
    return [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.pid not in servers]
