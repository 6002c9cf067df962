"""The client side of a clustered sweep: hand points to a dask scheduler, take records back as
they arrive (a sweep Runner, see mmbench.sweep)."""

from __future__ import annotations

import contextlib
import math
import queue
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from mmbench.cluster.placement import WorkerSlot, admissible, fits_some, resources_for, slots_of
from mmbench.cluster.task import EVENT_TOPIC, Measure, job_for, run_job
from mmbench.errors import MmbenchError
from mmbench.measure.harness import HarnessOptions, prediction_for
from mmbench.results import PointRecord, atomic_write
from mmbench.sweep import Finished, OnStart, PlannedPoint
from mmbench.units import fmt_bytes

WAIT_S = 0.25  # how long the loop waits for a result before it looks at start events again
WORKERS_REFRESH_S = 1.0  # the worker list is an RPC to the scheduler: not on every result
RESUME_HINT = "the finished points are kept; run the same command with --resume to finish"

OnEvent = Callable[[PlannedPoint, dict[str, Any]], None]


@dataclass
class _Flight:
    """A point handed to the scheduler."""

    point: PlannedPoint
    need: int | None  # predicted system peak it asked for (None: --force, any worker)
    started_on: list[str] = field(default_factory=list)  # worker of each start, in order


def unmeasured(point: PlannedPoint, status: str, cause: str, **fields: Any) -> PointRecord:
    """The record of a point no worker measured, with the model's figures as a local sweep's
    skipped points have them."""
    per_image, pred = prediction_for(point.config)
    return PointRecord(
        **point.config.to_dict(), repeat=point.repeat, status=status, cause=cause,
        source_bytes_per_image=per_image, predicted_retained_bytes=pred.retained_bytes,
        predicted_bytes_shipped=pred.bytes_shipped, predicted_peak_bytes=pred.peak_bytes, **fields,
    )  # fmt: skip


class ClusterRunner:
    """Measures points on a dask.distributed cluster through `client`. `measure` replaces the
    measurement on the workers (the overhead benchmark); `on_event` sees every start event."""

    def __init__(self, client: Any, measure: Measure | None = None, on_event: OnEvent | None = None) -> None:
        self.client = client
        self._task: Callable[..., Any] = run_job if measure is None else partial(run_job, measure=measure)
        self._on_event = on_event
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._workers: list[WorkerSlot] = []
        self._workers_at = -math.inf

    def workers(self) -> list[WorkerSlot]:
        now = time.monotonic()
        if now - self._workers_at > WORKERS_REFRESH_S:
            self._workers = slots_of(self.client.scheduler_info()["workers"])
            self._workers_at = now
        return self._workers

    def __call__(
        self, todo: list[PlannedPoint], options: HarnessOptions, on_start: OnStart | None
    ) -> Generator[Finished, None, None]:
        if options.memray_dir is not None:
            raise MmbenchError("--memray runs on one machine only: its captures would stay on the workers")
        pending = list(todo)
        flights: dict[Any, _Flight] = {}  # future -> its point
        token = uuid.uuid4().hex[:8]  # keys unique to this sweep: the scheduler may serve others
        self.client.subscribe_topic(EVENT_TOPIC, lambda event: self._events.put(event[1]))
        try:
            while pending or flights:
                skipped = self._admit(pending, flights, options, token)
                if skipped:
                    yield skipped
                    continue
                if not flights:  # no worker takes points now: wait for one to join
                    self.client.wait_for_workers(1, timeout=None)
                    self._workers_at = -math.inf
                    continue
                self._wait(list(flights))
                self._drain(flights, on_start)
                batch = [
                    self._finish(f, flights.pop(f), options.timeline_dir) for f in list(flights) if f.done()
                ]
                if batch:
                    yield batch
        except OSError as exc:  # the scheduler is gone (CommClosedError is an OSError)
            raise MmbenchError(f"lost the cluster's scheduler ({exc}); {RESUME_HINT}") from None
        finally:
            self._close(flights)

    def _admit(
        self, pending: list[PlannedPoint], flights: dict[Any, _Flight], options: HarnessOptions, token: str
    ) -> Finished:
        """Submit what the workers can run at once; points no worker could hold come back skipped."""
        workers = self.workers()
        skipped: Finished = []
        if not workers:
            return skipped
        needs = [f.need for f in flights.values()]
        for point in list(pending):
            if len(needs) >= len(workers):
                break
            need = None if options.force else prediction_for(point.config)[1].system_peak_bytes
            if not fits_some(need, workers):
                largest = max(w.memory for w in workers)
                cause = (
                    f"predicted {fmt_bytes(need)} > {fmt_bytes(largest)}, the most any of the cluster's "
                    f"{len(workers)} worker(s) offers (mmbench_memory)"
                )
                skipped.append((point, unmeasured(point, "skipped", cause)))
            elif admissible(need, needs, workers):
                job = job_for(point.config, point.repeat, options, timeline=options.timeline_dir is not None)
                key, resources = f"mmbench-{token}-{point.index}", resources_for(need)
                future = self.client.submit(self._task, job, key=key, resources=resources, pure=False)
                flights[future] = _Flight(point, need)
                needs.append(need)
            else:
                continue
            pending.remove(point)
        return skipped

    def _wait(self, futures: list[Any]) -> None:
        from distributed import wait

        with contextlib.suppress(TimeoutError):
            wait(futures, timeout=WAIT_S, return_when="FIRST_COMPLETED")

    def _drain(self, flights: dict[Any, _Flight], on_start: OnStart | None) -> None:
        """Start events: count attempts, tell the progress which point started."""
        by_key = {f.key: flight for f, flight in flights.items()}
        while True:
            try:
                msg = self._events.get_nowait()
            except queue.Empty:
                return
            flight = by_key.get(msg.get("key"))
            if flight is None:  # another sweep's, or a point already recorded
                continue
            if msg.get("event") == "started":
                flight.started_on.append(str(msg.get("worker")))
                if on_start:
                    on_start(flight.point)
            if self._on_event:
                self._on_event(flight.point, msg)

    def _finish(
        self, future: Any, flight: _Flight, timeline_dir: Path | None
    ) -> tuple[PlannedPoint, PointRecord]:
        point = flight.point
        attempts = max(1, len(flight.started_on))
        last = flight.started_on[-1] if flight.started_on else None
        if future.status == "finished":
            answer = future.result()
            worker = str(answer.get("worker"))
            if "refused" in answer:
                cause = str(answer["refused"])
                return point, unmeasured(
                    point, "failed", cause, **answer.get("machine", {}), cluster_worker=worker,
                    cluster_attempts=attempts,
                )  # fmt: skip
            record = PointRecord.from_dict(answer["record"], where=f"point {point.index} from {worker}")
            if record.timeline_file and answer.get("timeline") and timeline_dir is not None:
                # Only the file's name is taken from the worker: it writes nowhere but the timelines dir.
                name = Path(record.timeline_file).name
                atomic_write(timeline_dir / name, str(answer["timeline"]))
                record = replace(record, timeline_file=f"{timeline_dir.name}/{name}")
            return point, replace(record, cluster_worker=worker, cluster_attempts=attempts)
        if future.status == "error":
            from distributed import KilledWorker

            exc = future.exception()
            if isinstance(exc, KilledWorker):
                where = ", ".join(flight.started_on) or "its worker"
                cause = (
                    f"its worker died during the point on each of {attempts} attempt(s) ({where}): "
                    "the worker process was killed, or its machine lost"
                )
            else:
                cause = f"the cluster could not run it on {last or 'a worker'}: {type(exc).__name__}: {exc}"
            return point, unmeasured(point, "failed", cause, cluster_worker=last, cluster_attempts=attempts)
        raise MmbenchError(f"the scheduler dropped point {point.index} ({future.status}); {RESUME_HINT}")

    def _close(self, flights: dict[Any, _Flight]) -> None:
        """Cancel what is queued or running (its worker kills the point's processes)."""
        try:
            self.client.unsubscribe_topic(EVENT_TOPIC)
            if flights:
                self.client.cancel(list(flights), force=True)
        except OSError:
            pass  # the scheduler is gone: nothing left to cancel
