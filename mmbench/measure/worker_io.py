"""What crosses into and out of a worker process: one typed object each way, written by one side and
read back by the other with the same type (as pyperf's worker and manager share its `Run`).

The harness hands the worker a `WorkerJob`; the worker hands back a `WorkerResult`, whose `client`
and `traffic` are the record's own sections (mmbench.record), built by the worker where the
readings are taken; the rest is what the harness needs to place the point in time. This module
stays light (no torch, no numpy): the harness imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.record import ClientFigures, Traffic

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """One point for a worker: its parameters and the engine it talks to, and where its files are."""

    config: PointConfig
    url: str  # the engine's
    source_cache: str  # the directory the harness made the point's sources in
    memray_path: str | None = None  # capture the rollouts with memray, to this file
    memray_native: bool = False  # ... with native (C/C++) frames
    asset_dir: str | None = None  # raw-file: the directory the client writes each image to once
    # the trainer stage: hand the trajectories over here, after every reading (mmbench.trainer)
    traces_path: str | None = None

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> WorkerJob:
        return _read(cls, data, "job")


@dataclass(frozen=True, slots=True)
class WorkerPhases:
    """time.monotonic() as the worker passed each phase (system-wide clock: the harness sets them
    against its own stamps; see mmbench.measure.overhead)."""

    main: float  # main() began
    setup: float  # the world was built and warmed up, the collector frozen
    rollouts: float  # the baseline was read, the rollouts began
    rollouts_end: float
    readings: float  # every reading after the rollouts was taken


@dataclass(frozen=True, slots=True)
class WorkerResult:
    client: ClientFigures
    traffic: Traffic
    phases: WorkerPhases
    rollout_wall_s: float
    # why rollouts failed (the first 20); a point with any is recorded as failed with the first
    failures: list[str] = field(default_factory=list)
    # (time.monotonic(), rollout, turn) as each turn ended, for the timeline
    turn_ends: list[tuple[float, int, int]] = field(default_factory=list)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> WorkerResult:
        return _read(cls, data, "result")


def _read(cls: type[T], data: bytes, what: str) -> T:
    try:
        return msgspec.json.decode(data, type=cls)
    except msgspec.DecodeError as exc:  # ValidationError included: a worker of another version
        raise MmbenchError(f"the worker's {what} cannot be read ({exc})") from None
