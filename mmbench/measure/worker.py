"""The worker: one measured point in a new process (`python -m mmbench.measure.worker JOB OUT
PARENT_PID`, or forked from a fork server that imported this module: see mmbench.launch).

It sets the world up, takes the baseline, runs the K rollouts against the engine the harness
started, and reads RSS at each phase. It writes one JSON object to OUT and prints nothing. The
object carries time.monotonic() stamps of its phases (`phases`): CLOCK_MONOTONIC is system-wide,
so the harness sets them against its own stamps to break the point's wall time down.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import signal
import sys
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mmbench.backends import make_driver
from mmbench.config import PointConfig
from mmbench.facts import facts_of
from mmbench.launch import write_result
from mmbench.launch.lifecycle import die_with_parent, set_process_name
from mmbench.measure import probes
from mmbench.measure.accounting import account
from mmbench.measure.fingerprint import fingerprint
from mmbench.measure.worker_io import WorkerJob, WorkerPhases, WorkerResult
from mmbench.record import Accounting, Allocator, ClientFigures, Rendering, RssReadings, Traffic
from mmbench.rollout import Totals
from mmbench.trainer.traces import write_traces
from mmbench.transports import make_transport
from mmbench.world.client import build_body, build_raw_body, tls_context
from mmbench.world.codec import CODECS, get_codec
from mmbench.world.images import IMAGE_FORMATS, SourceSpec, make_source
from mmbench.world.media import data_url
from mmbench.world.renderer import Renderer
from mmbench.world.sidecar import MultiModalData, Placeholder

PROCESS_NAME = "mmbench-worker"


def _warm_up(config: PointConfig, build: bool = True) -> None:
    """Run every code path once on a tiny input, so one-time costs (lazy library state, the thread
    pool, the HTTP client's SSL context) land in the baseline and not in what the rollouts retain.
    With build False no torch operation runs (see prewarm)."""
    # The point's own dtype: bfloat16 casts and builds through torch kernels that float32 never
    # touches (their one-time state was ~1.8 MiB of the retained figure before it was warmed here).
    renderer = Renderer(
        facts_of(config).geometry, image_cache_max=1, dtype=config.dtype if build else "float32"
    )
    source = make_source(SourceSpec(64, 64, config.image_format, "flat"), 0, 0, 0)
    rendered = renderer.process(source)
    sidecar = MultiModalData([rendered.mm_hash], [Placeholder(0, 1)], [rendered.item])
    codec = get_codec(config.codec)

    async def once() -> None:
        if build:
            await asyncio.to_thread(build_body, codec, config.model, [1], sidecar, [True], 1, renderer.dtype)
        else:
            await asyncio.to_thread(codec.dumps, {"warm": [1]})
        raw_body = (codec, config.model, [1], [data_url(source, config.image_format)], 1)
        await asyncio.to_thread(build_raw_body, *raw_body)
        async with httpx.AsyncClient(verify=tls_context()):
            pass

    asyncio.run(once())


def prewarm() -> None:
    """For a fork server (mmbench.launch): the one-time state of the libraries every worker uses
    (lazy imports, PIL's codecs, asyncio and its thread pool, OpenSSL's tables), made once before
    the forks. No torch operation runs here: the first one starts torch's OpenMP threads, which a
    fork does not carry over; each forked worker's own warm-up starts them, before its baseline.
    asyncio.run joins the pool's thread on the way out, so the server stays single-threaded."""
    for fmt in IMAGE_FORMATS:
        for codec in CODECS:
            _warm_up(PointConfig(image_format=fmt, codec=codec), build=False)


def _settle() -> int:
    gc.collect()
    return probes.rss_bytes()


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and all its threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _trimmed(freeze_thresholds: bool) -> int:
    gc.collect()
    probes.deep_trim(freeze_thresholds)
    return probes.rss_bytes()


def measure(
    config: PointConfig,
    url: str,
    memray_path: str | None = None,
    source_cache: str | None = None,
    memray_native: bool = False,
    started: float | None = None,
    asset_dir: str | None = None,
    traces_path: str | None = None,
) -> WorkerResult:
    phases = {"main": time.monotonic() if started is None else started}
    cache = Path(source_cache) if source_cache else None
    assets = Path(asset_dir) if asset_dir else None
    world = make_driver(config, make_transport(config.mode, config.sent_hashes_max), cache, assets)
    _warm_up(config)
    world.warm_up()
    # Everything alive now (modules, the world) is moved out of the collector's way, so that the
    # gc.collect() before each reading scans only what the rollouts made.
    gc.collect()
    gc.freeze()
    tracker: AbstractContextManager[Any] = nullcontext()
    if memray_path:
        import memray

        tracker = memray.Tracker(memray_path, native_traces=memray_native, follow_fork=False)
    # Tracking stops after the retained readings, while the trajectories are still alive, so that the
    # capture's leaked allocations (alive when tracking stopped) are what the client retains.
    phases["setup"] = time.monotonic()
    with ExitStack() as tracking:
        tracking.enter_context(tracker)
        _settle()
        rss_baseline = _trimmed(freeze_thresholds=False)
        # What the later trimmed readings release below this baseline (None: not measured)
        baseline_trim_floor = probes.trim_floor_bytes()
        peak_method = "vmhwm" if probes.reset_peak() else "sampler"
        sampler: AbstractContextManager[Any] = (
            probes.PeakSampler() if peak_method == "sampler" else nullcontext()
        )
        phases["rollouts"] = time.monotonic()
        t_run, cpu_run = time.perf_counter(), _cpu_s()
        with sampler as s:
            trajectories = world.run(url)
        rollout_wall, client_cpu = time.perf_counter() - t_run, _cpu_s() - cpu_run
        phases["rollouts_end"] = time.monotonic()
        hwm = probes.hwm_bytes() if peak_method == "vmhwm" else None
        rss_peak = int(hwm if hwm is not None else s.peak)
        rss_retained = _settle()
        uss_retained = probes.uss_bytes()
        ledger = account(trajectories, world.cached_items())
        rss_retained_trimmed = _trimmed(freeze_thresholds=True)
        totals = Totals.of(trajectories)
        shape = fingerprint(trajectories)
        media_checks = world.media_checks(trajectories)
        tracking.close()
        if traces_path and not totals.failed_rollouts:
            # the hand-over to the orchestrator (mmbench.trainer), after every client reading but
            # the released ones, which are taken once the trajectories are gone
            write_traces(trajectories, config, Path(traces_path))
        del trajectories
        rss_released = _settle()
        rss_released_trimmed = _trimmed(freeze_thresholds=True)
    # Raw media: the engine's pixels checked against the client's own derivation, now that every
    # reading is taken (it preprocesses each distinct image once).
    wrong: int | None = totals.wrong_results + world.count_wrong_media(media_checks)
    if totals.unverified:  # the engine returned no checksums for some items: unknown, never 0
        wrong = None
    memray_peak: int | None = None
    if memray_path:
        import memray

        memray_peak = int(memray.FileReader(memray_path).metadata.peak_memory)
    phases["readings"] = time.monotonic()
    rss = RssReadings(
        baseline_bytes=rss_baseline, baseline_trim_floor_bytes=baseline_trim_floor,
        peak_bytes=max(rss_peak, rss_retained), retained_bytes=rss_retained,
        retained_trimmed_bytes=rss_retained_trimmed, released_bytes=rss_released,
        released_trimmed_bytes=rss_released_trimmed, uss_retained_bytes=uss_retained, peak_method=peak_method,
    )  # fmt: skip
    rendering = replace(
        shape, cache_hits=totals.cache_hits, cache_misses=totals.cache_misses, rederived=totals.rederived,
        trims_after_build=world.trims,
    )  # fmt: skip
    allocator = Allocator(
        os.environ.get("MALLOC_MMAP_THRESHOLD_"), os.environ.get("MALLOC_ARENA_MAX"), probes.glibc_version()
    )
    traffic = Traffic(
        requests=totals.requests, bytes_shipped=totals.bytes_shipped, bytes_per_turn=totals.bytes_per_turn,
        full_items_sent=totals.full_items_sent, null_items_sent=totals.null_items_sent,
        media_items_sent=totals.media_items_sent, fallbacks=totals.fallbacks,
        fallback_error=totals.fallback_error, retries=totals.retries, extra_bytes_shipped=totals.extra_bytes,
        wrong_results=wrong, failed_rollouts=totals.failed_rollouts, latency_p50_s=totals.latency_p50_s,
        latency_p95_s=totals.latency_p95_s, latency_max_s=totals.latency_max_s,
    )  # fmt: skip
    return WorkerResult(
        client=client_figures(rss, ledger, rendering, allocator, client_cpu, memray_peak),
        traffic=traffic,
        phases=WorkerPhases(**phases),
        rollout_wall_s=rollout_wall,
        failures=totals.failures[:20],
        turn_ends=world.turn_ends,
    )


def client_figures(
    rss: RssReadings, accounting: Accounting, rendering: Rendering, allocator: Allocator, cpu_s: float,
    memray_peak: int | None,
) -> ClientFigures:  # fmt: skip
    """The client's section: the readings, and what they mean above the baseline."""
    assert rss.baseline_bytes is not None and rss.retained_bytes is not None
    assert rss.retained_trimmed_bytes is not None and rss.peak_bytes is not None
    assert rss.released_bytes is not None
    base = rss.baseline_bytes
    retained = rss.retained_bytes - base
    # The trimmed reading against the baseline as the same trim would leave it (see probes)
    live = rss.retained_trimmed_bytes - (base - (rss.baseline_trim_floor_bytes or 0))
    return ClientFigures(
        retained_bytes=retained, retained_live_bytes=live, allocator_retention_bytes=retained - live,
        peak_bytes=rss.peak_bytes - base, released_bytes=rss.released_bytes - base, cpu_s=cpu_s,
        memray_peak_bytes=memray_peak, rss=rss, accounting=accounting, rendering=rendering,
        allocator=allocator,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = sys.argv[1:] if argv is None else argv
    set_process_name(PROCESS_NAME)
    # Ctrl-C ends the worker at once (the harness records the point as interrupted) instead of
    # raising KeyboardInterrupt. With Python's handler in place, asyncio.run installs its own and,
    # putting the old one back when the rollouts end, has the signal module format the finished
    # task's result, every trajectory with its arrays, into an error message it discards: ~1 s of
    # CPU at K=4, N=8, 512x512 inside the rollout window (Python 3.11).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent(int(args[2]) if len(args) > 2 else None)
    job = WorkerJob.decode(Path(args[0]).read_bytes())
    np.random.seed(job.config.seed)
    result = measure(
        job.config, job.url, job.memray_path, job.source_cache, job.memray_native, started, job.asset_dir,
        job.traces_path,
    )  # fmt: skip
    write_result(args[1], result.encode())
    return 0


if __name__ == "__main__":
    code = main()
    # The result is on disk: skip the interpreter's teardown (unloading torch takes a while).
    sys.stderr.flush()
    os._exit(code)
