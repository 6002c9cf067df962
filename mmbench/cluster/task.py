"""What a cluster worker runs for one point: check versions, measure as a local sweep does, send
the record back.

The job and the answer are plain dicts (JSON-like), not pickled mmbench objects, so that a worker
with another mmbench can still read the job far enough to refuse it with a clear reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from mmbench import __version__
from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions
from mmbench.measure.machines import machine_block
from mmbench.measure.timeline import TIMELINES_DIR
from mmbench.results import SCHEMA_VERSION, PointRecord
from mmbench.sweep.loop import measure_here

PROTOCOL = 1
EVENT_TOPIC = "mmbench-point"  # the worker tells the client when a point starts, and on which worker
CANCEL_POLL_S = 0.2
# The harness options a job carries (the rest are paths and callbacks of the worker's own).
OPTION_NAMES = ("force", "max_memory", "timeout_s", "memray_native")

Measure = Callable[[PointConfig, int, HarnessOptions], PointRecord]
_sources: tempfile.TemporaryDirectory[str] | None = None


def job_for(config: PointConfig, repeat: int, options: HarnessOptions, timeline: bool) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL, "mmbench": __version__, "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(), "repeat": repeat, "timeline": timeline,
        "options": {k: getattr(options, k) for k in OPTION_NAMES},
    }  # fmt: skip


def version_refusal(job: dict[str, Any], where: str) -> str | None:
    """Why this worker must not measure the job (another mmbench or results schema), or None."""
    theirs = (job.get("mmbench"), job.get("schema_version"), job.get("protocol"))
    if theirs == (__version__, SCHEMA_VERSION, PROTOCOL):
        return None
    return (
        f"worker {where} runs mmbench {__version__} (results schema {SCHEMA_VERSION}), the sweep "
        f"mmbench {theirs[0]} (schema {theirs[1]}): install the sweep's mmbench on every worker"
    )


# dask's nanny sets these in its worker's environment (distributed.nanny.pre-spawn-environ, and a
# fixed hash seed); inherited by the point's processes they would change what is measured
# (MALLOC_TRIM_THRESHOLD_ makes glibc return memory sooner, the thread caps change torch's pools).
NANNY_HASH_SEED = ("PYTHONHASHSEED", "6640")


def nanny_environ() -> dict[str, str]:
    """The variables a nanny on this machine sets (dask's config), with the values it sets."""
    import dask
    import distributed  # noqa: F401 - loads its defaults into dask's config

    configured = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    return {str(k): str(v) for k, v in configured.items() if v is not None} | dict([NANNY_HASH_SEED])


@contextlib.contextmanager
def environment_as_without_dask() -> Iterator[None]:
    """os.environ without what the nanny added (a variable holding exactly the nanny's value is
    taken for its), for the point's processes to inherit; restored afterwards. A worker runs one
    point at a time, so no other measurement sees the change."""
    added = {k: v for k, v in nanny_environ().items() if os.environ.get(k) == v}
    for k in added:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(added)


def _source_cache() -> Path:
    """Encoded sources, shared by the points this worker process measures (as a local sweep's)."""
    global _sources
    if _sources is None:
        _sources = tempfile.TemporaryDirectory(prefix="mmbench-sources-")
    return Path(_sources.name)


class _CancelWatch:
    """Kills the point's measuring process when the client cancels the task (Ctrl-C), so that a
    cancelled point frees its worker at once instead of running to its end."""

    def __init__(self, cancelled: Callable[[], bool], on_measuring: Callable[[int], None]) -> None:
        self._cancelled, self._on_measuring = cancelled, on_measuring
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmbench-cancel-watch", daemon=True)

    def measuring(self, pid: int) -> None:
        self._pid = pid
        self._on_measuring(pid)
        if self._thread.ident is None:  # watched from the first measuring process on
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CANCEL_POLL_S):
            if self._pid is not None and self._cancelled():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                return

    def __enter__(self) -> _CancelWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()


def run_job(job: dict[str, Any], measure: Measure | None = None) -> dict[str, Any]:
    """The task a worker runs: one point, answered as {"record": ..., "timeline": ...} or
    {"refused": why}. `measure` defaults to the sweep's own (the overhead benchmark passes a
    trivial one)."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()

    def event(what: str, **extra: Any) -> None:
        msg = {"key": key, "event": what, "worker": worker.address, "host": socket.gethostname()}
        worker.log_event(EVENT_TOPIC, {**msg, **extra})

    event("started", pid=os.getpid())
    refusal = version_refusal(job, f"{worker.address} ({socket.gethostname()})")
    if refusal is not None:
        return {
            "protocol": PROTOCOL,
            "refused": refusal,
            "machine": msgspec.to_builtins(machine_block()),
            "worker": worker.address,
        }

    def cancelled() -> bool:
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    config = PointConfig.from_dict(job["config"], where="cluster job")
    with (
        tempfile.TemporaryDirectory(prefix="mmbench-point-") as tmp,
        _CancelWatch(cancelled, lambda pid: event("measuring", pid=pid)) as watch,
        environment_as_without_dask(),
    ):
        timelines = Path(tmp, TIMELINES_DIR)
        options = HarnessOptions(
            source_cache=_source_cache(), timeline_dir=timelines if job["timeline"] else None,
            on_worker_start=watch.measuring, **job["options"],
        )  # fmt: skip
        record = (measure or measure_here)(config, job["repeat"], options)
        # The timeline file is named relative to a results directory: here tmp, there the client's.
        name = record.timing.timeline_file
        timeline = Path(tmp, name).read_text() if name else None
    return {"protocol": PROTOCOL, "record": record.to_dict(), "timeline": timeline, "worker": worker.address}
