"""A fleet as a point's engine: `replicas` engines of the chosen kind (embedded, or real vLLMs)
behind a router mmbench starts for the point (vllm-router), measured replica by replica.

`Fleet` is one more variant of the engine choice (mmbench.measure.engines): a point with
`replicas` >= 1 runs on the fleet of its engine choice's kind (`fleet_for`). Its handle starts
every replica (in parallel: a vLLM takes half a minute), waits for each to answer, then starts the
router on their URLs and waits until it calls them all healthy; the client talks to the router only.
Everything is stopped on the way out, also on failure and Ctrl-C: the router first, then every
replica with its process tree.

What the harness reads of it is what it reads of any engine: `stats()` is the replicas' stats
summed (so the record's engine figures are the fleet's, never one replica's), `pids()` every
process of the fleet (the router's too), `hwm()` the replicas' and the router's high-water marks
summed (an upper bound of their peak together). What only a fleet has comes from `reading()` at the
end: each replica's own figures (one dead replica's as last read before it died), the router's
counters and memory, which `sections` turns into the record's replicas, router and fleet sections
once the client's traffic is known (the router's retries show as bytes the replicas received beyond
what the client shipped).

`kill_replica_at_turn` T: a watcher kills replica 1's whole tree (SIGKILL) once the router has
received K x (T - 1) generate requests, that is when the rollouts have finished turn T - 1. Its stats
are read just before, so what it served stays counted.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import httpx

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.launch import StartMethod
from mmbench.record import EngineFigures, EngineRecord, FleetFigures, ReplicaFigures, RouterFigures, Traffic
from mmbench.world.engine.stats import SUMMED, EngineStats, KindUsage
from mmbench.world.engine.vllm.server import VllmEngine
from mmbench.world.router import VllmRouter, counted, router_version, since

KILL_POLL_S = 0.02
# an engine whose own counts cover less than this share of the bytes the client shipped is not one
# engine: its figures are one replica's
COVERED_MIN = 0.9


def fleet_for(choice: Any, config: PointConfig) -> Any:
    """The engine a point runs on: a fleet of the choice's kind where the point has replicas."""
    if config.replicas == 0:
        return choice
    if isinstance(choice, Fleet):
        return choice
    if not getattr(choice, "started", False):
        raise MmbenchError(
            "--replicas starts engines behind a router; an --engine-url engine is not mmbench's to "
            "start (leave out --engine-url, or --replicas)"
        )
    return Fleet(choice)


def check_fleets(choice: Any, configs: Iterable[PointConfig]) -> None:
    """Before any point runs: fleet points need an engine mmbench starts, and the router."""
    if any(c.replicas for c in configs):
        fleet_for(choice, PointConfig(replicas=1))
        router_version()


@dataclass(frozen=True, slots=True)
class Fleet:
    """`replicas` engines of one kind (the replica choice: Embedded or Vllm) behind a router."""

    replica: Any  # Embedded | Vllm (mmbench.measure.engines; not imported here: it imports this)

    started: ClassVar[bool] = True
    reusable: ClassVar[bool] = False  # started per point: its router's state is the point's

    @property
    def served(self) -> str:
        return str(self.replica.served)

    @property
    def defaults(self) -> Any:
        return self.replica.defaults

    def check(self, configs: Iterable[PointConfig]) -> None:
        configs = list(configs)
        self.replica.check(configs)
        check_fleets(self.replica, configs)

    def open(self, config: PointConfig, assets: Path | None, method: StartMethod) -> FleetHandle:
        return FleetHandle(self.replica, config, assets, method)

    def identity(self) -> Any:
        return self.replica.identity()


@dataclass(slots=True)
class _Replica:
    handle: Any  # an EngineHandle
    ready: EngineStats | None = None
    last: EngineStats | None = None  # its latest stats (a dead one's: as last read)
    sizes: dict[str, int] | None = None
    url: str | None = None
    killed: str | None = None


@dataclass(frozen=True, slots=True)
class FleetReading:
    """What a fleet measured for a point, read before it stops."""

    replicas: list[ReplicaFigures]
    router: RouterFigures
    cache_sizes: list[dict[str, int] | None] = field(default_factory=list)
    # per replica, the null slots it lacked, every attempt: the embedded engine counts them as cache
    # misses; vLLM counts no miss of its own for them and answers each with a 500 (P0/P1 cache drift)
    null_misses: list[int | None] = field(default_factory=list)


class ReplicaSet:
    """A fleet's replicas as one engine the sweep's pool can keep between points (real vLLMs:
    mmbench.measure.engine_pool): started together, reset together, alive while every one is.
    A point's FleetHandle puts its own router in front of them."""

    restarts: int | None = None
    pid: int | None = None  # many processes: pids()

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles
        self._entered: list[Any] = []

    def __enter__(self) -> ReplicaSet:
        def enter(handle: Any) -> None:
            handle.__enter__()
            self._entered.append(handle)

        # in parallel: a vLLM takes half a minute to start
        with ThreadPoolExecutor(max_workers=len(self.handles)) as pool:
            errors = [f.exception() for f in [pool.submit(enter, h) for h in self.handles]]
        failed = [e for e in errors if e is not None]
        if failed:
            self.__exit__(None, None, None)
            raise failed[0]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        entered, self._entered = self._entered, []
        for handle in entered:
            with contextlib.suppress(Exception):
                handle.__exit__(None, None, None)

    @property
    def urls(self) -> list[str]:
        return [str(h.url) for h in self.handles]

    @property
    def url(self) -> str | None:
        return None  # a router's, per point (FleetHandle)

    @property
    def flags(self) -> str | None:
        return self.handles[0].flags if self.handles else None

    @property
    def failure(self) -> str | None:
        for i, h in enumerate(self.handles, 1):
            if not h.alive():
                return f"replica {i}: {h.failure or 'it exited'}"
        return None

    def alive(self) -> bool:
        return all(h.alive() for h in self.handles)

    def pids(self) -> list[int]:
        return [pid for h in self.handles for pid in h.pids()]

    def reset(self) -> None:
        """Every replica reset as one engine between two points (a dead one: MmbenchError, and the
        pool starts a new set)."""
        if not self.alive():
            raise MmbenchError(f"a replica no longer serves ({self.failure})")
        with ThreadPoolExecutor(max_workers=len(self.handles)) as pool:
            errors = [f.exception() for f in [pool.submit(h.reset) for h in self.handles]]
        failed = [e for e in errors if e is not None]
        if failed:
            raise failed[0]

    def stats(self, trim: bool = False) -> EngineStats | None:
        known = [s for s in (h.stats(trim=trim) for h in self.handles) if s is not None]
        return sum_stats(known) if known else None

    def reset_peaks(self) -> None:
        for h in self.handles:
            h.reset_peaks()

    def hwm(self) -> int | None:
        peaks = [p for p in (h.hwm() for h in self.handles) if p is not None]
        return sum(peaks) if peaks else None


class FleetHandle:
    """The harness's handle on a fleet (the EngineHandle protocol): a router started for the point
    in front of its replicas, which are the point's own (started and stopped with it) or a set the
    sweep's pool keeps between points (`given`)."""

    restarts: int | None = None

    def __init__(
        self, replica: Any, config: PointConfig, assets: Path | None, method: StartMethod,
        given: ReplicaSet | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self._own = given is None
        self._set = given or ReplicaSet(
            [replica.open(config, assets, method) for _ in range(config.replicas)]
        )
        self._replicas = [_Replica(h) for h in self._set.handles]
        self.router = VllmRouter([], config.router_policy, retries=config.router_retries == "on")
        self._router_ready: dict[str, float] | None = None
        self._router_rss0: int | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def over(cls, replicas: ReplicaSet, config: PointConfig) -> FleetHandle:
        """A point's router in front of replicas the pool keeps (not stopped with the point)."""
        return cls(None, config, None, "fork", given=replicas)

    # --- start and stop ------------------------------------------------------------------

    def __enter__(self) -> FleetHandle:
        try:
            if self._own:
                self._set.__enter__()
            for r in self._replicas:
                r.url = r.handle.url
            self.router.workers = [str(r.url) for r in self._replicas]
            self.router.start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.router.stop()
        if self._own:
            self._set.__exit__(None, None, None)

    # --- what the harness asks of every engine --------------------------------------------

    @property
    def url(self) -> str | None:
        return self.router.url

    @property
    def pid(self) -> int | None:
        return self.router.pid

    @property
    def flags(self) -> str | None:
        return self._replicas[0].handle.flags if self._replicas else None

    @property
    def failure(self) -> str | None:
        if not self.router.alive():
            return f"the router exited: {self.router.log_tail()}"
        return None

    def pids(self) -> list[int]:
        out = list(self.router.pids())
        for r in self._replicas:
            with contextlib.suppress(Exception):
                out += r.handle.pids()
        return out

    def alive(self) -> bool:
        """Serving: the router runs and at least one replica does (a dead replica is recorded as such)."""
        return self.router.alive() and any(self._replica_alive(r) for r in self._replicas)

    @staticmethod
    def _replica_alive(r: _Replica) -> bool:
        if r.killed:
            return False
        try:
            return bool(r.handle.alive())
        except Exception:
            return False

    def reset_peaks(self) -> None:
        for r in self._replicas:
            r.handle.reset_peaks()

    def hwm(self) -> int | None:
        peaks = [r.handle.hwm() for r in self._replicas] + [self.router.hwm()]
        known = [p for p in peaks if p is not None]
        return sum(known) if known else None

    def stats(self, trim: bool = False) -> EngineStats | None:
        """The live replicas' stats summed with the dead ones' last; the first call (the harness's,
        once ready) is the point's start: the router's counters and each replica's stats then."""
        with self._lock:
            for r in self._replicas:
                if self._replica_alive(r):
                    with contextlib.suppress(Exception):  # a replica that died answers nothing
                        r.last = r.handle.stats(trim=trim)
            first = self._router_ready is None
            if first:
                self._router_ready = self.router.counters()
                self._router_rss0 = self.router.rss_bytes()
                for r in self._replicas:
                    r.ready = r.last
                if self.config.kill_replica_at_turn:
                    self._watcher = threading.Thread(target=self._watch, name="fleet-kill", daemon=True)
                    self._watcher.start()
            known = [r.last for r in self._replicas if r.last is not None]
        return sum_stats(known) if known else None

    # --- a replica killed mid-point -------------------------------------------------------

    def _watch(self) -> None:
        """Kill replica 1 once the rollouts have finished turn kill_replica_at_turn - 1."""
        cfg = self.config
        need = cfg.rollouts * (cfg.kill_replica_at_turn - 1)
        before = counted(self._router_ready or {}, "vllm_router_requests", "inference")
        while not self._stop.is_set():
            seen = counted(self.router.counters(), "vllm_router_requests", "inference") - before
            if seen >= need:
                self.kill(0, f"killed at turn {cfg.kill_replica_at_turn} (kill_replica_at_turn)")
                return
            self._stop.wait(KILL_POLL_S)

    def kill(self, index: int, why: str) -> None:
        """Read replica `index`'s stats, then kill its whole process tree (SIGKILL)."""
        r = self._replicas[index]
        with self._lock:
            with contextlib.suppress(Exception):  # a replica that died answers nothing
                r.last = r.handle.stats()
            r.sizes = _cache_sizes(r.url)
            r.killed = why
            pids = r.handle.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # --- what only a fleet has ------------------------------------------------------------

    def reading(self) -> FleetReading:
        """Each replica's figures and the router's, from the point's start (call after stats())."""
        replicas = []
        sizes: list[dict[str, int] | None] = []
        null_misses: list[int | None] = []
        for r in self._replicas:
            alive = self._replica_alive(r)
            if alive:
                r.sizes = _cache_sizes(r.url)
            sizes.append(r.sizes)
            final = r.last.since(r.ready) if r.last is not None and r.ready is not None else None
            replicas.append(replica_figures(r, final, alive))
            if final is None:
                null_misses.append(None)
            elif isinstance(r.handle, VllmEngine):
                null_misses.append(final.status_counts.get("500", 0))
            else:
                null_misses.append(final.cache_misses)
        now = self.router.counters()
        counters = since(now, self._router_ready or {})
        rss = self.router.rss_bytes()
        router = RouterFigures(
            version=self.router.version, flags=self.router.flags, rss_baseline_bytes=self._router_rss0,
            rss_bytes=rss or None, peak_rss_bytes=self.router.hwm(),
            requests=round(counted(counters, "vllm_router_requests", "inference")),
            retries=round(counted(counters, "vllm_router_retries")), counters=counters,
        )  # fmt: skip
        return FleetReading(replicas, router, sizes, null_misses)


def _cache_sizes(url: str | None) -> dict[str, int] | None:
    """An embedded replica's cached items' bytes by hash (None: a vLLM, which does not say)."""
    if url is None:
        return None
    try:
        with httpx.Client(trust_env=False, timeout=10.0) as http:
            reply = http.get(f"{url}/stats", params={"keys": "1"})
    except httpx.HTTPError:
        return None
    stats = EngineStats.decode(reply.content) if reply.status_code == 200 else None
    return stats.cache_sizes if stats is not None else None


def _status_text(counts: dict[str, int]) -> str | None:
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) or None


def replica_figures(r: _Replica, final: EngineStats | None, alive: bool) -> ReplicaFigures:
    ready = r.ready
    died = not alive
    failure = r.killed
    if died and failure is None:
        with contextlib.suppress(Exception):
            failure = r.handle.failure
        failure = failure or "it exited during the point"
    base = ReplicaFigures(url=r.url, died=died, failure=failure,
                          rss_baseline_bytes=ready.rss_bytes if ready else None)  # fmt: skip
    if final is None:
        return base
    end_rss = final.rss_untrimmed_bytes if final.rss_untrimmed_bytes is not None else final.rss_bytes
    peak = None
    if alive:
        with contextlib.suppress(Exception):
            peak = r.handle.hwm()
    return replace(
        base, requests=final.requests, bytes_received=final.bytes_received,
        status_counts=_status_text(final.status_counts), cache_hits=final.cache_hits,
        cache_misses=final.cache_misses, cache_bytes=final.cache_bytes, cache_items=final.cache_items,
        preprocess_calls=final.preprocess_calls,
        retained_bytes=end_rss - ready.rss_bytes if ready is not None else None, peak_rss_bytes=peak,
    )  # fmt: skip


# EngineStats fields that are state (not counters) and add up over replicas.
_STATE_SUMS = ("rss_bytes", "cache_capacity_bytes", "cache_bytes", "cache_items", "rss_untrimmed_bytes",
               "max_in_flight")  # fmt: skip


def sum_stats(stats: list[EngineStats]) -> EngineStats:
    """Several engines' stats as one: counters, answers and state summed (a vLLM's kinds too)."""
    changes: dict[str, Any] = {}
    for name in (*SUMMED, *_STATE_SUMS, "restarts", "finished"):
        values = [getattr(s, name) for s in stats]
        known = [v for v in values if v is not None]
        changes[name] = sum(known) if known else None
    counts: dict[str, int] = {}
    for s in stats:
        for status, n in s.status_counts.items():
            counts[status] = counts.get(status, 0) + n
    changes["status_counts"] = counts
    kinds: dict[str, KindUsage] = {}
    peaks: dict[str, int] = {}
    for s in stats:
        for kind, usage in (s.kinds or {}).items():
            had = kinds.get(kind)
            kinds[kind] = KindUsage(usage.rss_bytes + (had.rss_bytes if had else 0),
                                    usage.cpu_s + (had.cpu_s if had else 0.0))  # fmt: skip
        for kind, peak in (s.peaks or {}).items():
            peaks[kind] = peaks.get(kind, 0) + peak
    changes["kinds"] = kinds or None
    changes["peaks"] = peaks or None
    changes["pid"] = None
    changes["cache_sizes"] = None
    if changes["rss_bytes"] is None:
        changes["rss_bytes"] = 0
    return replace(stats[0], **changes)


def sections(
    reading: FleetReading, traffic: Traffic, config: PointConfig
) -> tuple[list[ReplicaFigures], RouterFigures, FleetFigures]:
    """The record's replicas, router and fleet sections, once the client's traffic is known."""
    replicas = reading.replicas
    received = [r.bytes_received for r in replicas]
    router = reading.router
    # a dead replica's bytes after its last reading are unknown: so are the retried bytes then
    if (
        traffic.bytes_shipped is not None
        and all(b is not None for b in received)
        and not any(r.died for r in replicas)
    ):
        total = sum(b for b in received if b is not None)
        # fewer than the client shipped: the router answered some requests itself (503, every
        # circuit open), and what its retries added is unknown
        extra = total - traffic.bytes_shipped
        router = replace(router, retried_bytes=extra if extra >= 0 else None)
    requests = [r.requests for r in replicas if r.requests is not None and not r.died]
    balance = None
    if len(requests) == len(replicas) and requests:
        balance = max(requests) / min(requests) if min(requests) else math.inf
    caches = [r.cache_bytes for r in replicas]
    cache_bytes = sum(c for c in caches if c is not None) if any(c is not None for c in caches) else None
    unique = None
    if reading.cache_sizes and all(s is not None for s in reading.cache_sizes):
        merged: dict[str, int] = {}
        for s in reading.cache_sizes:
            merged.update(s or {})
        unique = sum(merged.values())
    sized = [sum((s or {}).values()) for s in reading.cache_sizes] if reading.cache_sizes else []
    held = sum(sized) if sized and unique is not None else cache_bytes
    null = reading.null_misses or [r.cache_misses for r in replicas]
    misses = [r.preprocess_calls for r in replicas] if _raw(config) else null
    fleet = FleetFigures(
        replicas=len(replicas), died=sum(r.died for r in replicas), cache_bytes=cache_bytes,
        unique_cache_bytes=unique,
        duplication=round(held / unique, 4) if held is not None and unique else None,
        balance=None if balance is None else (balance if math.isinf(balance) else round(balance, 4)),
        misses=sum(m for m in misses if m is not None) if all(m is not None for m in misses) else None,
    )  # fmt: skip
    return replicas, router, fleet


def _raw(config: PointConfig) -> bool:
    from mmbench.transports.registry import TRANSPORTS

    return not TRANSPORTS[config.mode].renders


def covered(figures: EngineFigures, traffic: Traffic, url: str | None) -> FleetFigures:
    """An external engine's own counts against the client's traffic: where they cover less than
    COVERED_MIN of the bytes shipped, the URL is not one engine (a router, most likely), and its
    figures are one replica's: the fleet section says so."""
    got, sent = figures.bytes_received, traffic.bytes_shipped
    if got is None or not sent:
        return FleetFigures()
    share = round(got / sent, 4)
    if share >= COVERED_MIN:
        return FleetFigures(covered_share=share)
    note = (
        f"the engine at {url} counted {share:.0%} of the bytes the client shipped: it is not one engine "
        "(a router in front of several?), so its figures are one replica's and are not shown as the "
        "engine's; measure the fleet with --replicas R, or each engine by its own URL"
    )
    return FleetFigures(covered_share=share, note=note)


def with_fleet(
    record: EngineRecord, reading: FleetReading | None, traffic: Traffic, config: PointConfig, started: bool
) -> EngineRecord:
    """The engine's record with a fleet's sections, or, for an engine mmbench did not start, with
    what its counts cover of the client's traffic (and its figures dropped where they are one
    replica's of several)."""
    if reading is not None:
        replicas, router, fleet = sections(reading, traffic, config)
        return replace(record, replicas=replicas, router=router, fleet=fleet)
    if started:
        return record
    fleet = covered(record.figures, traffic, record.url)
    if fleet.note is not None:
        return replace(record, figures=EngineFigures(), fleet=fleet)
    return replace(record, fleet=fleet)
