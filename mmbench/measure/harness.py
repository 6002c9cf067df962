"""The harness: one point = a fresh engine process + a fresh worker process, then a record.

The harness owns both processes, so it can stop them on any failure: a worker that dies is
recorded as failed with its cause, and the engine is always stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

import psutil

from mmbench.backends import check_runnable
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.facts import facts_of
from mmbench.launch import DEFAULT_START_METHOD, PARENT_PID, Process, StartMethod, launch, prestart
from mmbench.measure.assemble import engine_figures, point_record
from mmbench.measure.engine_pool import EnginePool, Lease, WarmUp, engine_pool
from mmbench.measure.engines import Embedded, EngineChoice, EngineHandle, Vllm
from mmbench.measure.fleet import Fleet, FleetHandle, ReplicaSet, fleet_for, with_fleet
from mmbench.measure.model import Prediction, predict
from mmbench.measure.overhead import HarnessStamps, overhead
from mmbench.measure.preflight import preflight
from mmbench.measure.timeline import TimelineSampler, engine_peak, keep_timeline
from mmbench.measure.worker_io import WorkerJob, WorkerResult
from mmbench.record import EngineRecord, PointRecord, Timing, Traffic
from mmbench.trainer.stage import run_stage
from mmbench.units import fmt_bytes
from mmbench.world.engine.remote import EMBEDDED
from mmbench.world.engine.stats import EngineStats
from mmbench.world.images import SourceSpec, SourceStore, make_source
from mmbench.world.media import disk_bytes

MemoryScope = Literal["worker", "system"]
DEFAULT_TIMEOUT_S = 3600.0
MAX_MEMORY_SHARE = 0.8
EXCEEDED = "exceeded --max-memory"  # how a point the watchdog stopped for its memory begins its cause
WATCH_INTERVAL_S = 0.02
SOURCE_SAMPLES = 4
WORKER_ENTRY = "mmbench.measure.worker:main"
# What a fork server imports and runs once for every worker: torch first (the client builds bodies
# with it; mmbench.world.client imports it lazily, so that the harness itself never does).
WORKER_PRELOAD = ("torch", "mmbench.measure.worker:prewarm")


@dataclass(frozen=True, slots=True)
class HarnessOptions:
    memray_dir: Path | None = None
    # memray also records native (C/C++) frames (mmbench profile --native)
    memray_native: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Encoded sources are kept here and reused by later points of the same sweep.
    source_cache: Path | None = None
    # Run a point even when preflight predicts it will not fit.
    force: bool = False
    # The watchdog kills a worker whose RSS passes this (None: a safe share of the machine; 0: off).
    max_memory: int | None = None
    # What max_memory bounds: the worker's RSS (worker), or the worker's and the engine's together
    # (system: what `mmbench plan --measure` holds each point to, the engine's own memory counting).
    memory_scope: MemoryScope = "worker"
    # Called with the worker's pid once it is started (tests use it to kill a worker).
    on_worker_start: Callable[[int], None] | None = None
    # Where each point's memory timeline is saved (None: sampled, not saved).
    timeline_dir: Path | None = None
    # How the worker and the engine start: forked from a fork server that imported their modules
    # (fork), or as fresh interpreters (exec). Points tracked by memray always use exec.
    start_method: StartMethod = DEFAULT_START_METHOD
    # A test's hook: the trainer stage's rank 0 changes one pixel, which its check must catch.
    plant_trainer_difference: bool = False
    # The engine every point runs on: the embedded one or a real vLLM started for it, or an external
    # one by URL (mmbench.measure.engines.choose_engine makes it, checked).
    engine: EngineChoice = field(default_factory=Embedded)
    # The sweep's engines, kept between its points (None: a real engine is started and stopped
    # for every point; mmbench.sweep.loop makes one unless --fresh-engine).
    engine_pool: EnginePool | None = None
    # A real engine serves a small point of each mode before the first point of that mode's baseline
    # (mmbench.measure.engine_pool says why); off for `mmbench compat`, which asks only what works.
    warm_engine: bool = True


@lru_cache(maxsize=64)
def estimated_source_bytes_per_image(spec: SourceSpec) -> float:
    """A quick estimate for points preflight refuses: the compression ratio of a small source of
    the same kind, scaled to the full size (no full-size image is made)."""
    small = SourceSpec(min(spec.width, 256), min(spec.height, 256), spec.fmt, spec.content, spec.seed)
    ratio = len(make_source(small, 10_000, 0, 0)) / (small.width * small.height * 3)
    return ratio * spec.width * spec.height * 3


@lru_cache(maxsize=64)
def source_bytes_per_image(spec: SourceSpec) -> float:
    """The model's source-size input: the mean encoded size of a few sources of this spec."""
    sizes = [len(make_source(spec, 10_000 + i, 0, 0)) for i in range(SOURCE_SAMPLES)]
    return sum(sizes) / len(sizes)


def _spec(config: PointConfig) -> SourceSpec:
    w, h = config.image_wh
    return SourceSpec(w, h, config.image_format, config.content, config.seed)


def prediction_for(config: PointConfig, engine: str = EMBEDDED) -> tuple[float, Prediction]:
    per_image = source_bytes_per_image(_spec(config))
    return per_image, predict(config, per_image, engine=engine)


def worker_env(config: PointConfig) -> dict[str, str]:
    """The worker's environment: ours, with the allocator knobs of the point set (glibc reads them
    at start-up, so they must be set before the worker process exists)."""
    env = dict(os.environ)
    if config.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(config.malloc_arena_max)
    if config.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(config.malloc_mmap_threshold)
    return env


def default_max_memory() -> int:
    """The watchdog's default: a safe share of the machine, leaving room for the engine and the OS."""
    return int(psutil.virtual_memory().total * MAX_MEMORY_SHARE)


def _rss(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def _watch(
    proc: Process, opts: HarnessOptions, err: Path, engine_pids: Callable[[], list[int]] | None = None
) -> str | None:
    """Wait for the worker, killing it when its RSS (memory_scope system: with the engine's, read
    from `engine_pids`) passes --max-memory or time runs out. Returns the cause of a failure, or
    None for a clean exit."""
    limit = opts.max_memory if opts.max_memory is not None else default_max_memory()
    system = opts.memory_scope == "system" and engine_pids is not None
    deadline = time.monotonic() + opts.timeout_s
    while True:
        try:
            code = proc.wait(timeout=WATCH_INTERVAL_S)
            return None if code == 0 else _describe_exit(code, _tail(err))
        except subprocess.TimeoutExpired:
            pass
        rss = _rss(proc.pid)
        if system and engine_pids is not None:
            rss += sum(_rss(pid) for pid in engine_pids())
        if limit and rss > limit:
            proc.kill()
            proc.wait()
            what = "worker and engine RSS" if system else "worker RSS"
            return f"{EXCEEDED} {fmt_bytes(limit)}: {what} reached {fmt_bytes(rss)}"
        if time.monotonic() > deadline:
            return f"worker timed out after {opts.timeout_s:.0f} s"


def _describe_exit(code: int, stderr_tail: str) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker killed by {name}"
    return f"worker exited with code {code}: {stderr_tail or '(no output)'}"


def _tail(path: Path, limit: int = 300) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][-limit:] if lines else ""


def prepare_sources(config: PointConfig, cache: Path) -> None:
    """Make the point's source images into `cache` before its worker starts, where an earlier point
    of the sweep has not: making them is the environment's work, not the client's, and must not
    run (and be timed) in the rollout window. The worker reads them back as its environment."""
    store = SourceStore(_spec(config), cache, config.group_size)
    wanted = [(r, t, i) for r in range(config.rollouts) for t in range(config.turns)
              for i in range(config.images_per_turn)]  # fmt: skip
    # PIL and numpy release the GIL while they encode and draw: one thread per core.
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, len(wanted)))) as pool:
        list(pool.map(lambda rti: store.ensure(*rti), wanted))


@contextmanager
def _engine_for(
    opts: HarnessOptions, config: PointConfig, method: StartMethod, tmp: Path, file_assets: bool,
    sources: Path,
) -> Iterator[Lease]:  # fmt: skip
    """The point's engine, ready: a real one from the sweep's pool (started once for the points
    that share its configuration, warmed for each mode, reset between points) or from a pool of
    its own that starts it for this point alone; mmbench's own engine started and stopped around it."""
    real = _real(opts.engine)
    if real is not None:
        warm_up = _warm_up(opts, method, sources, tmp) if opts.warm_engine else None
        with contextlib.ExitStack() as stack:
            pool = opts.engine_pool or stack.enter_context(engine_pool(fresh=True))
            with pool.lease(real, config, file_assets, warm_up) as lease:
                if not isinstance(lease.engine, ReplicaSet):
                    yield lease
                    return
                with FleetHandle.over(lease.engine, config) as fleet:  # the point's own router
                    yield replace(lease, engine=fleet)
        return
    assets = Path(tmp, "assets") if file_assets else None
    if assets is not None:
        assets.mkdir()
    engine = opts.engine.open(config, assets, method)
    t0 = time.monotonic()
    with engine:
        yield Lease(engine, assets, reused=0, setup_s=time.monotonic() - t0)


def _spawn(job: Path, out: Path, err_file: BinaryIO, config: PointConfig, method: StartMethod) -> Process:
    """A worker for `job`, writing its result to `out` and its stderr to `err_file`."""
    return launch(
        WORKER_ENTRY, [str(job), str(out), PARENT_PID], method=method, preload=WORKER_PRELOAD,
        env=worker_env(config), stderr=err_file,
    )  # fmt: skip


def _real(choice: EngineChoice) -> Vllm | None:
    """The real engine a point's engine (or its fleet's replicas) comes from, if it is one: served
    from the sweep's pool (mmbench.measure.engine_pool)."""
    if isinstance(choice, Fleet):
        choice = choice.replica
    return choice if isinstance(choice, Vllm) else None


WARM_UP_TURNS = 2  # a second turn, for hash-only's null slots served from the engine's cache


def _warm_up(opts: HarnessOptions, method: StartMethod, sources: Path, tmp: Path) -> WarmUp:
    """A warm-up: one rollout of WARM_UP_TURNS turns of the point's own mode and geometry, served
    by the engine and measured by nobody; None once it is served, else why it was not."""

    def serve(engine: EngineHandle, config: PointConfig, assets: Path | None) -> str | None:
        # sent to each engine directly: a fleet's kill is the point's, not its warm-up's
        small = replace(config, rollouts=1, turns=min(config.turns, WARM_UP_TURNS), kill_replica_at_turn=0)
        prepare_sources(small, sources)
        job, out, err = Path(tmp, "warm-up.json"), Path(tmp, "warm-up-out.json"), Path(tmp, "warm-up.txt")
        # a fleet's replicas: each serves a warm-up of its own
        urls = engine.urls if isinstance(engine, ReplicaSet) else [engine.url]
        for url in urls:
            assert url is not None
            job.write_bytes(
                WorkerJob(small, url, str(sources), None, False, str(assets) if assets else None).encode()
            )
            with open(err, "wb") as err_file:
                proc = _spawn(job, out, err_file, small, method)
                try:
                    cause = _watch(proc, opts, err, engine.pids)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            if cause is not None:
                return f"the engine's warm-up failed: {cause}"
        return None

    return serve


def _final_engine_stats(engine: EngineHandle, ready: EngineStats | None) -> EngineStats | None:
    """The engine's stats at the end of the point, raw and trimmed RSS in one request, its counters
    counted from `ready` (an external engine's run on across points; the embedded one's start at 0
    but its CPU seconds)."""
    if not engine.alive():
        return None
    stats = engine.stats(trim=True)
    if stats is None or ready is None:  # an external engine that exposes no stats: all unknown
        return None
    return stats.since(ready)


def measure_point(config: PointConfig, repeat: int = 0, options: HarnessOptions | None = None) -> PointRecord:
    """Measure one point (see _measure_point); the record says which engine served it.

    The point is not checked against its engine here: a sweep checks all of its points once, before
    the first runs (mmbench.sweep.loop), and a single point is checked by who runs it (mmbench run
    and profile, mmbench.api.run_point), so an external engine is not probed again for every point."""
    opts = options or HarnessOptions()
    opts = replace(opts, engine=fleet_for(opts.engine, config))  # a fleet where the point has replicas
    return _measure_point(config, repeat, opts, opts.engine.identity())


def _measure_point(
    config: PointConfig, repeat: int, opts: HarnessOptions, served_by: EngineRecord
) -> PointRecord:
    """Measure one point in a new worker and a new engine process (forked from fork servers, or
    fresh interpreters: options.start_method), or against an external engine (options.engine).
    Never raises for a worker failure: it is recorded."""
    # --max-memory, where given, is also the most a point may use: preflight holds it to that too.
    budget = opts.max_memory or None
    check_runnable(config)
    # the engine the model predicts for: the one started (an external engine's memory is not ours)
    served = opts.engine.served
    held = opts.engine_pool.held_bytes() if opts.engine_pool is not None and not opts.force else 0
    if not opts.force:
        quick = preflight(config, budget=budget, engine=served, held=held)  # no sources: the hopeless
        if not quick.fits:
            estimate = estimated_source_bytes_per_image(_spec(config))
            guess = predict(config, estimate, engine=served)
            return point_record(
                config, repeat, estimate, guess, status="skipped", cause=quick.reason, engine=served_by
            )
    per_image, pred = prediction_for(config, served)
    if not opts.force:
        check = preflight(config, per_image, budget, served, held)
        if not check.fits:
            return point_record(
                config, repeat, per_image, pred, status="skipped", cause=check.reason, engine=served_by
            )
    stamps = HarnessStamps(time.monotonic())
    # memray's capture is compared with fresh interpreters' (mmbench profile): never forked.
    method: StartMethod = "exec" if opts.memray_dir is not None else opts.start_method
    if method == "fork":  # its imports overlap the sources and the engine's start
        prestart(WORKER_ENTRY, preload=WORKER_PRELOAD, env=worker_env(config))
    with tempfile.TemporaryDirectory(prefix="mmbench-point-") as tmp:
        job, out, err = Path(tmp, "job.json"), Path(tmp, "out.json"), Path(tmp, "stderr.txt")
        traces = Path(tmp, "traces.bin")
        sources = opts.source_cache or Path(tmp, "sources")
        prepare_sources(config, sources)
        stamps.sources_ready = time.monotonic()
        memray_path = None
        if opts.memray_dir is not None:
            opts.memray_dir.mkdir(parents=True, exist_ok=True)
            memray_path = opts.memray_dir / f"{config.mode}-K{config.rollouts}-r{repeat}.bin"
            memray_path.unlink(missing_ok=True)
        # raw-file: the asset directory the client writes each image to once and the engine reads
        file_assets = facts_of(config).mode.media == "file"
        with _engine_for(opts, config, method, Path(tmp), file_assets, sources) as lease:
            engine, assets = lease.engine, lease.assets
            assert engine.url is not None
            ready = engine.stats()  # ready, before the worker starts (None: an engine without stats)
            engine.reset_peaks()  # its high-water marks from here on are the point's
            stamps.engine_ready = time.monotonic()
            job.write_bytes(WorkerJob(
                config, engine.url, str(sources), str(memray_path) if memray_path else None,
                opts.memray_native, str(assets) if assets else None,
                str(traces) if config.trainer != "off" else None,
            ).encode())  # fmt: skip
            with open(err, "wb") as err_file:
                stamps.spawn = time.monotonic()
                proc = _spawn(job, out, err_file, config, method)
                sampler = TimelineSampler(proc.pid, engine.pids).start()
                try:
                    if opts.on_worker_start:
                        opts.on_worker_start(proc.pid)
                    cause = _watch(proc, opts, err, engine.pids)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    stamps.exited = time.monotonic()
                    timeline, engine_hwm = sampler.stop(), engine.hwm()
            # its counters and CPU seconds while the worker ran (it serves nothing else meanwhile)
            engine_stats = _final_engine_stats(engine, ready)
            fleet = engine.reading() if isinstance(engine, FleetHandle) and engine_stats is not None else None
            asset_bytes = disk_bytes(assets) if assets is not None else None
            engine_failure = None if engine_stats is not None else engine.failure
            if engine_stats is None and cause is None and opts.engine.started:
                died = "engine process died during the point"
                cause = f"{died}: {engine_failure}" if engine_failure else died
        stamps.engine_stopped = time.monotonic()
        wall = stamps.engine_stopped - stamps.begin
        worker: WorkerResult | None = None
        if cause is None:
            try:
                worker = WorkerResult.decode(out.read_bytes())
            except (OSError, MmbenchError):
                cause = "worker wrote no result"
                engine_stats = None
        stage = None
        if worker is not None and config.trainer != "off" and not worker.traffic.failed_rollouts:
            # after the rollout: the orchestrator and the trainer ranks on the point's trajectories
            # (the engine is stopped; raw-file's shared directory is still there)
            stage = run_stage(
                config, traces, Path(tmp, "trainer"), assets, per_image, opts.timeout_s,
                plant=opts.plant_trainer_difference, client_runs=worker.client.rendering.cache_misses,
                engine_runs=engine_stats.preprocess_calls if engine_stats is not None else None,
            )  # fmt: skip
    rollout_s = worker.rollout_wall_s if worker is not None else None
    turn_ends = worker.turn_ends if worker is not None else []
    timing = Timing(
        wall_s=wall, rollout_wall_s=rollout_s, start_method=method,
        overhead=overhead(stamps, worker.phases if worker is not None else None, wall, rollout_s),
        timeline_file=keep_timeline(timeline, turn_ends, opts.timeline_dir, config, repeat),
    )  # fmt: skip
    engine_record = replace(
        served_by, reused=lease.reused if opts.engine.started else None, flags=engine.flags,
        warmed=lease.warmed if _real(opts.engine) is not None else None,
        failure=engine_failure if worker is None else None,
        figures=engine_figures(engine_stats, ready, engine_peak(timeline, engine_hwm), lease.baseline),
    )  # fmt: skip
    engine_record = with_fleet(
        engine_record, fleet, worker.traffic if worker is not None else Traffic(), config, opts.engine.started
    )
    if worker is None:
        return point_record(
            config, repeat, per_image, pred, status="failed", cause=cause, engine=engine_record, timing=timing
        )
    return point_record(
        config, repeat, per_image, pred, worker=worker, engine=engine_record, timing=timing,
        asset_disk_bytes=asset_bytes, stage=stage,
    )  # fmt: skip
