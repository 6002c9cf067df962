"""Connecting to a cluster (or starting `local:N`), and checking its workers before any point goes out."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

from mmbench import __version__
from mmbench.cluster.address import ClusterSpec
from mmbench.cluster.placement import MEMORY_RESOURCE, SLOT_RESOURCE, WorkerSlot, slots_of
from mmbench.cluster.runner import ClusterRunner
from mmbench.errors import MmbenchError
from mmbench.results import SCHEMA_VERSION
from mmbench.units import fmt_bytes

CONNECT_TIMEOUT_S = 10.0
LOCAL_START_TIMEOUT_S = 120.0
# The scheduler gives a point back to the client at the first death of its worker; the client
# then decides (runner.py): a point that had started there is tried once more, a point only
# queued there goes back to the queue. A scheduler that retries by itself (dask's default: 3)
# works too, with more attempts than mmbench's one retry.
ALLOWED_FAILURES = 0
WORKER_HINT = (
    f"start each worker as `dask worker ADDRESS --nworkers 1 --nthreads 1 --resources "
    f'"{SLOT_RESOURCE}=1,{MEMORY_RESOURCE}=BYTES"`'
)


@dataclass(frozen=True, slots=True)
class Cluster:
    client: Any  # distributed.Client
    name: str  # what the user named: the address, or local:N
    workers: tuple[WorkerSlot, ...]  # those that take mmbench points, when it was opened
    allowed_failures: int | None  # the scheduler's retries after a worker death (None: unknown)

    def describe(self) -> str:
        memory = ", ".join(sorted({fmt_bytes(w.memory) for w in self.workers}))
        text = f"cluster {self.name}: {len(self.workers)} worker(s) take points, offering {memory}"
        if self.allowed_failures not in (None, ALLOWED_FAILURES):
            env = f"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES={ALLOWED_FAILURES}"
            text += (
                f"; its scheduler retries a point {self.allowed_failures} times after its worker dies, "
                f"mmbench once (start it with {env})"
            )
        return text


def worker_versions() -> tuple[str, int]:
    """Run on each worker at connect time: its mmbench and results schema."""
    return __version__, SCHEMA_VERSION


@contextlib.contextmanager
def open_cluster(spec: ClusterSpec) -> Iterator[Cluster]:
    """A client on the scheduler (a LocalCluster of single-threaded worker processes on 127.0.0.1
    for local:N), checked and closed on the way out, also on failure or Ctrl-C."""
    import dask
    from distributed import Client, LocalCluster

    local: Any = None
    client: Any = None
    # A LocalCluster's nannies live in this process and add their workers' variables to its
    # environment (task.py): put it back when the cluster closes, for what this process runs next.
    saved_environ = dict(os.environ)
    # Its scheduler lives here too and logs an error for each point whose worker died; the
    # sweep decides what that means (a retry, or the point's cause), so it says nothing itself.
    scheduler_log = logging.getLogger("distributed.scheduler")
    saved_level = scheduler_log.level
    try:
        if spec.local:
            scheduler_log.setLevel(logging.CRITICAL)
            share = psutil.virtual_memory().available // spec.local_workers  # points run side by side
            with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
                local = LocalCluster(
                    n_workers=spec.local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR,
                    resources={SLOT_RESOURCE: 1, MEMORY_RESOURCE: share},
                    preload=["mmbench.cluster.local_worker"],
                )  # fmt: skip
            client = Client(local)
            client.wait_for_workers(spec.local_workers, timeout=LOCAL_START_TIMEOUT_S)
            name = f"local:{spec.local_workers} ({local.scheduler_address})"
        else:
            try:
                client = Client(spec.address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MmbenchError(
                    f"--cluster {spec.address}: cannot reach the scheduler ({first})"
                ) from None
            name = str(spec.address)
        workers = _checked_workers(client, name)
        yield Cluster(client, name, tuple(workers), _allowed_failures(client))
    finally:
        if client is not None:
            client.close()
        if local is not None:
            local.close()
        if spec.local:
            os.environ.clear()
            os.environ.update(saved_environ)
            scheduler_log.setLevel(saved_level)


@contextlib.contextmanager
def cluster_runner(
    spec: ClusterSpec, on_open: Callable[[Cluster], None] | None = None
) -> Iterator[ClusterRunner]:
    """A sweep runner on the cluster `spec` names, open while the context is (the CLI and the API)."""
    with open_cluster(spec) as cluster:
        if on_open is not None:
            on_open(cluster)
        yield ClusterRunner(cluster.client)


def _checked_workers(client: Any, name: str) -> list[WorkerSlot]:
    """The workers that take points; refuse a cluster without any, or with one that declares no
    memory or runs another mmbench."""
    with contextlib.suppress(TimeoutError, OSError):
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    workers = slots_of(client.scheduler_info()["workers"])
    if not workers:
        raise MmbenchError(
            f"--cluster {name}: no worker declares the {SLOT_RESOURCE!r} resource; {WORKER_HINT}"
        )
    no_memory = [w.address for w in workers if w.memory <= 0]
    if no_memory:
        raise MmbenchError(
            f"--cluster {name}: worker {no_memory[0]} declares no {MEMORY_RESOURCE} (the memory it offers "
            f"points, in bytes); {WORKER_HINT}"
        )
    answers = client.run(worker_versions, workers=[w.address for w in workers], on_error="return")
    for address, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            raise MmbenchError(
                f"--cluster {name}: worker {address} cannot run mmbench ({type(answer).__name__}: {answer}); "
                f"install mmbench {__version__} on every worker"
            )
        if tuple(answer) != (__version__, SCHEMA_VERSION):
            raise MmbenchError(
                f"--cluster {name}: worker {address} runs mmbench {answer[0]} (results schema {answer[1]}), "
                f"this client {__version__} (schema {SCHEMA_VERSION}); install one mmbench on every worker"
            )
    return workers


def _allowed_failures(client: Any) -> int | None:
    try:
        value = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    except Exception:  # an old or locked-down scheduler: only the note is lost
        return None
    return value if isinstance(value, int) else None
