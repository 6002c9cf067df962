"""The client side of a clustered sweep: hand points to a dask scheduler, take records back as
they arrive (a sweep Runner, see mmbench.sweep.loop)."""

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

import msgspec

from mmbench.cluster.placement import DEPTH, WorkerSlot, admissible, fits_some, resources_for, slots_of
from mmbench.cluster.task import EVENT_TOPIC, Measure, job_for, run_job
from mmbench.errors import MmbenchError
from mmbench.measure.assemble import point_record
from mmbench.measure.harness import HarnessOptions, prediction_for
from mmbench.record import Machine
from mmbench.results import PointRecord, atomic_write
from mmbench.sweep.loop import Finished, OnStart, PlannedPoint
from mmbench.units import fmt_bytes

WAIT_S = 0.25  # how long the loop waits for a result before it looks at start events again
WORKERS_REFRESH_S = 1.0  # the worker list is an RPC to the scheduler: not on every result
RESUME_HINT = "the finished points are kept; run the same command with --resume to finish"

OnEvent = Callable[[PlannedPoint, dict[str, Any]], None]


@dataclass(eq=False)
class _Flight:
    """A point on its way through the cluster, over every submission of it."""

    point: PlannedPoint
    need: int | None = None  # predicted system peak it asks for (None: --force, any worker)
    submissions: int = 0
    started_on: list[str] = field(default_factory=list)  # the worker of each start, in order
    started_keys: set[str] = field(default_factory=set)  # the submissions that started

    @property
    def attempts(self) -> int:
        return len(self.started_on)


def unmeasured(point: PlannedPoint, status: str, cause: str, machine: Machine | None = None) -> PointRecord:
    """The record of a point no worker measured, with the model's figures as a local sweep's
    skipped points have them."""
    per_image, pred = prediction_for(point.config)
    record = point_record(point.config, point.repeat, per_image, pred, status=status, cause=cause)
    return replace(record, machine=machine) if machine is not None else record


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
        pending = [_Flight(p) for p in todo]
        running: dict[Any, _Flight] = {}  # future -> its point
        keys: dict[str, _Flight] = {}  # task key -> its point, for the start events
        token = uuid.uuid4().hex[:8]  # keys unique to this sweep: the scheduler may serve others
        self.client.subscribe_topic(EVENT_TOPIC, lambda event: self._events.put(event[1]))
        try:
            while pending or running:
                skipped = self._admit(pending, running, keys, options, token)
                if skipped:
                    yield skipped
                    continue
                if not running:  # no worker takes points now: wait for one to join
                    time.sleep(WORKERS_REFRESH_S)
                    continue
                self._wait(list(running))
                self._drain(keys, on_start)
                batch: Finished = []
                done = [f for f in running if f.done()]
                finished = [f for f in done if f.status == "finished"]
                answers = dict(zip(finished, self.client.gather(finished), strict=True))  # one round trip
                for future in done:
                    flight = running.pop(future)
                    record = self._finish(future, answers.get(future), flight, options.timeline_dir)
                    if record is None:  # to be tried again
                        pending.insert(0, flight)
                        self._workers_at = -math.inf  # a worker died: look again before admitting
                    else:
                        batch.append((flight.point, record))
                if batch:
                    yield batch
        except OSError as exc:  # the scheduler is gone (CommClosedError is an OSError)
            raise MmbenchError(f"lost the cluster's scheduler ({exc}); {RESUME_HINT}") from None
        finally:
            self._close(running)

    def _need(self, flight: _Flight, options: HarnessOptions) -> int | None:
        if flight.need is None and not options.force:
            flight.need = prediction_for(flight.point.config)[1].system_peak_bytes
        return flight.need

    def _admit(
        self, pending: list[_Flight], running: dict[Any, _Flight], keys: dict[str, _Flight],
        options: HarnessOptions, token: str,
    ) -> Finished:  # fmt: skip
        """Submit what the workers can run at once; points no worker could hold come back skipped."""
        workers = self.workers()
        skipped: Finished = []
        if not workers:
            return skipped
        needs = [f.need for f in running.values()]
        for flight in list(pending):
            if len(needs) >= DEPTH * len(workers):
                break
            point, need = flight.point, self._need(flight, options)
            if not fits_some(need, workers):
                largest = max(w.memory for w in workers)
                cause = (
                    f"predicted {fmt_bytes(need)} > {fmt_bytes(largest)}, the most any of the cluster's "
                    f"{len(workers)} worker(s) offers (mmbench_memory)"
                )
                skipped.append((point, unmeasured(point, "skipped", cause)))
            elif admissible(need, needs, workers):
                flight.submissions += 1
                job = job_for(point.config, point.repeat, options, timeline=options.timeline_dir is not None)
                key, resources = f"mmbench-{token}-{point.index}-{flight.submissions}", resources_for(need)
                running[self.client.submit(self._task, job, key=key, resources=resources, pure=False)] = (
                    flight
                )
                keys[key] = flight
                needs.append(need)
            else:
                continue
            pending.remove(flight)
        return skipped

    def _wait(self, futures: list[Any]) -> None:
        from distributed import wait

        with contextlib.suppress(TimeoutError):
            wait(futures, timeout=WAIT_S, return_when="FIRST_COMPLETED")

    def _drain(self, keys: dict[str, _Flight], on_start: OnStart | None) -> None:
        """Start events: where each point runs, how often it started; the progress hears of it."""
        while True:
            try:
                msg = self._events.get_nowait()
            except queue.Empty:
                return
            key = msg.get("key")
            flight = keys.get(key) if isinstance(key, str) else None
            if flight is None:  # another sweep's
                continue
            if msg.get("event") == "started":
                flight.started_on.append(str(msg.get("worker")))
                flight.started_keys.add(str(key))
                if on_start:
                    on_start(flight.point)
            if self._on_event:
                self._on_event(flight.point, msg)

    def _finish(
        self, future: Any, answer: dict[str, Any] | None, flight: _Flight, timeline_dir: Path | None
    ) -> PointRecord | None:
        """The point's record, or None when it goes back to the queue: its worker died before the
        point started there, or during its first attempt (the one retry)."""
        point, attempts = flight.point, max(1, flight.attempts)
        last = flight.started_on[-1] if flight.started_on else None
        if answer is not None:
            worker = str(answer.get("worker"))
            if "refused" in answer:
                cause = str(answer["refused"])
                machine = msgspec.convert(answer.get("machine", {}), Machine)
                placed = replace(machine, cluster_worker=worker, cluster_attempts=attempts)
                return unmeasured(point, "failed", cause, placed)
            record = PointRecord.from_dict(answer["record"], where=f"point {point.index} from {worker}")
            timing = record.timing
            if timing.timeline_file and answer.get("timeline") and timeline_dir is not None:
                # Only the file's name is taken from the worker: it writes nowhere but the timelines dir.
                name = Path(timing.timeline_file).name
                atomic_write(timeline_dir / name, str(answer["timeline"]))
                timing = replace(timing, timeline_file=f"{timeline_dir.name}/{name}")
            machine = replace(record.machine, cluster_worker=worker, cluster_attempts=attempts)
            return replace(record, timing=timing, machine=machine)
        if future.status == "error":
            from distributed import KilledWorker

            exc = future.exception()
            if isinstance(exc, KilledWorker):
                if future.key not in flight.started_keys or flight.attempts < 2:
                    return None  # queued on a worker that died, or the first death: once more
                where = ", ".join(flight.started_on)
                cause = (
                    f"its worker died during the point on each of {flight.attempts} attempts ({where}): "
                    "the worker process was killed, or its machine lost"
                )
            else:
                first = (str(exc).strip().splitlines() or [""])[0]  # a cause is one line
                cause = f"the cluster could not run it on {last or 'a worker'}: {type(exc).__name__}: {first}"
            return unmeasured(point, "failed", cause, Machine(cluster_worker=last, cluster_attempts=attempts))
        raise MmbenchError(f"the scheduler dropped point {point.index} ({future.status}); {RESUME_HINT}")

    def _close(self, running: dict[Any, _Flight]) -> None:
        """Cancel what is queued or running (its worker kills the point's processes)."""
        try:
            self.client.unsubscribe_topic(EVENT_TOPIC)
            if running:
                self.client.cancel(list(running), force=True)
        except OSError:
            pass  # the scheduler is gone: nothing left to cancel
