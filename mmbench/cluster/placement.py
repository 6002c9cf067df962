"""Which workers may take a point, and how many points to hand the scheduler at once.

Every mmbench worker declares two dask resources: `mmbench=1` (one measurement at a time, so that
measurements never share a machine's worker) and `mmbench_memory=BYTES` (what it offers). A point
asks for one `mmbench` and its predicted system peak of `mmbench_memory`; dask's scheduler then
gives it only to a worker that declares at least that much. A resource is a lower bound dask
checks for us, and unlike a list of worker addresses it also admits workers that join later.

The client keeps at most DEPTH points in flight per worker that could run them: one running and
one waiting, so that a worker starts its next point while the client is still writing the last
one's record, and no deep queue sits on a worker that may die or be outrun by one that joins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SLOT_RESOURCE = "mmbench"
MEMORY_RESOURCE = "mmbench_memory"
DEPTH = 2  # points in flight per worker


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    address: str
    memory: float  # declared mmbench_memory, bytes (0 when the worker declares none)


def slots_of(workers: Mapping[str, Mapping[str, Any]]) -> list[WorkerSlot]:
    """The workers that take mmbench points, from the scheduler's `workers` info."""
    out = []
    for address, info in workers.items():
        resources = info.get("resources") or {}
        if resources.get(SLOT_RESOURCE, 0) >= 1:
            out.append(WorkerSlot(address, float(resources.get(MEMORY_RESOURCE, 0))))
    return sorted(out, key=lambda s: s.address)


def resources_for(need: int | None) -> dict[str, float]:
    """What a point asks of a worker; `need` None (--force) asks no memory."""
    return {SLOT_RESOURCE: 1} if need is None else {SLOT_RESOURCE: 1, MEMORY_RESOURCE: float(need)}


def fits_some(need: int | None, workers: Iterable[WorkerSlot]) -> bool:
    return need is None or any(w.memory >= need for w in workers)


def admissible(
    need: int | None, in_flight: Iterable[int | None], workers: list[WorkerSlot], depth: int = DEPTH
) -> bool:
    """Whether one more point of this need may join those in flight: for every need t, the points
    needing at least t must not outnumber `depth` places on each worker offering at least t (Hall's
    condition; the workers a point fits are nested by memory, so these thresholds suffice). So no
    point waits behind more than depth - 1 others on the only workers that can hold it."""
    needs = [0 if n is None else n for n in (*in_flight, need)]
    return all(sum(n >= t for n in needs) <= depth * sum(w.memory >= t for w in workers) for t in set(needs))
