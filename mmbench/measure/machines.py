"""The machine that measured a point: its block in every record, and how records group by machine.

A sweep on a cluster measures points on several machines. Their figures compare only within one
kind of hardware (CPU model, core count, memory), so where the records hold more than one kind,
fits, tables and reports split by it instead of drawing one line through all of them. Hosts of the
same kind pool: ten identical nodes are one machine for the fits.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from mmbench.record import Machine, PointRecord

GIB = 1024**3
# What the record's own fields hold; the rest of the environment block goes into machine.environment.
_HARDWARE_KEYS = ("cpu_model", "cpu_count", "memory_total_bytes")


@lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    # environment() runs git twice; a worker measures many points, so ask once per process.
    from mmbench.measure.environment import environment

    return environment()


def machine_block() -> Machine:
    """This machine's block, a record's `machine` section (the timestamp is the point's own)."""
    from mmbench.measure.environment import utc_now

    env = dict(_static_environment(), timestamp_utc=utc_now())
    return Machine(
        host=socket.gethostname(),
        cpu_model=env["cpu_model"],
        cpu_count=env["cpu_count"],
        memory_bytes=env["memory_total_bytes"],
        environment={k: v for k, v in env.items() if k not in _HARDWARE_KEYS},
    )


def machine_of(record: PointRecord) -> str | None:
    """The record's kind of machine as a label, None when it carries no machine block (a local
    `mmbench run`, or a file written before records had one)."""
    m = record.machine
    cpu, cores, memory = m.cpu_model, m.cpu_count, m.memory_bytes
    if cpu is None and cores is None and memory is None:
        return None
    parts = [cpu or "unknown CPU"]
    if cores is not None:
        parts.append(f"{cores} CPUs")
    if memory is not None:
        parts.append(f"{memory / GIB:.0f} GiB")
    return ", ".join(parts)


def machines(records: Iterable[PointRecord]) -> list[str]:
    """The distinct machines that measured these records, in order of first appearance (a point no
    machine measured, such as one no worker could hold, names none)."""
    return [m for m in dict.fromkeys(machine_of(r) for r in records) if m is not None]


def machines_differ(records: Iterable[PointRecord]) -> bool:
    return len(machines(records)) > 1


def split_key(record: PointRecord, split: bool) -> str | None:
    """What a grouping adds to its key: the machine where the records' machines differ (None for
    a record without one, which then stands apart)."""
    return machine_of(record) if split else None


def roomiest(records: Iterable[PointRecord], labels: Iterable[str | None]) -> str | None:
    """Of these machines, the one with the most memory (the closest to holding a point that none
    could run); None when there is none."""
    memory = {machine_of(r): r.machine.memory_bytes or 0 for r in records}
    return max(labels, key=lambda m: (memory.get(m, 0), m or ""), default=None)
