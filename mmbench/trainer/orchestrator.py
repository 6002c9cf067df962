"""The orchestrator stand-in: one process per point (`python -m mmbench.trainer.orchestrator JOB
OUT`). It receives the env worker's traces, builds one sample per rollout branch with the mode's
payload, packs the samples per DP rank, encodes each rank's batch as msgpack and ships it as one
file per rank (`step_0/rank_R.bin`, temp + rename: prime-rl's filesystem transport), measuring
its memory and CPU per phase. It writes one JSON `OrchestratorResult` to OUT and prints nothing.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import msgspec
import numpy as np

from mmbench.trainer.entry import exit_now, serve
from mmbench.trainer.packing import PIXELS, Deriver, SampleBuilder, deal, first_fit, payload_of, rank_batch
from mmbench.trainer.traces import read_traces
from mmbench.trainer.wire import OrchestratorJob, OrchestratorResult, RankBatch
from mmbench.world import procmem
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, make_source

PROCESS_NAME = "mmbench-orchestrator"


def cpu_s() -> float:
    return time.process_time()


def rank_path(out_dir: Path, rank: int, step: int = 0) -> Path:
    return out_dir / f"step_{step}" / f"rank_{rank}.bin"


def ship(batch: RankBatch, path: Path) -> tuple[int, float, float]:
    """One rank's batch encoded and written atomically: its bytes, encode and write seconds."""
    t0 = time.perf_counter()
    buf = msgspec.msgpack.encode(batch)
    t1 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf)
    os.replace(tmp, path)
    n = len(buf)
    del buf
    return n, t1 - t0, time.perf_counter() - t1


def warm_up(job: OrchestratorJob) -> None:
    """One-time costs (PIL's codecs, numpy's and msgspec's first calls) before the baseline."""
    derive = Deriver(get_geometry(job.model), job.dtype)
    source = make_source(SourceSpec(64, 64, "png", "flat"), 0, 0, 0)
    from mmbench.world.renderer import decode_image, process_image

    _, grid = process_image(decode_image(source), derive.geometry, job.dtype)
    derive(source, [int(x) for x in grid.reshape(-1)])
    msgspec.msgpack.encode(RankBatch(0, 0, []))


def run(job: OrchestratorJob) -> OrchestratorResult:
    warm_up(job)
    gc.collect()
    gc.freeze()  # what is alive now (modules, the warm-up's state) is out of the collector's way
    procmem.malloc_trim()
    baseline = procmem.rss_bytes()
    traces_path = Path(job.traces)
    traces = read_traces(traces_path)
    gc.collect()
    held = procmem.rss_bytes() - baseline
    procmem.reset_peak()
    cpu0 = cpu_s()
    derive = Deriver(get_geometry(job.model), job.dtype)
    payload = payload_of(job.mode, job.rederive_at)

    t0 = time.perf_counter()
    builder = SampleBuilder(traces, payload, derive, job.dedup, job.dtype)
    samples = [builder.build(t) for t in traces]
    build_s = time.perf_counter() - t0

    pixel_bytes = sum(len(t.data) for s in samples for k, t in s.mm_kwargs.items() if k == "pixel_values")
    pixel_bytes += sum(len(u.pixels.data) for u in builder.unique.values() if u.pixels)
    ref_bytes = sum(len(r.url) for s in samples for r in s.mm_refs)
    ref_bytes += sum(len(u.ref.url) for u in builder.unique.values() if u.ref)
    longest = max((len(s) for s in samples), default=0)

    t0 = time.perf_counter()
    bins = first_fit(samples, job.seq_len or longest)
    per_rank = deal(bins, job.dp_ranks)
    batches = [rank_batch(0, r, b) for r, b in enumerate(per_rank)]
    pack_s = time.perf_counter() - t0

    sizes: list[int] = []
    encode_s = ship_s = 0.0
    for r in range(len(batches)):
        n, enc, wrote = ship(batches[r], rank_path(Path(job.out_dir), r))
        batches[r] = RankBatch(0, r, [])  # shipped: the orchestrator keeps nothing of it
        sizes.append(n)
        encode_s += enc
        ship_s += wrote
    cpu = cpu_s() - cpu0
    hwm = procmem.hwm_bytes()
    peak = (hwm if hwm is not None else procmem.rss_bytes()) - baseline

    images = sum(len(t.images) for t in traces)
    unique = len({im.mm_hash for t in traces for im in t.images})
    expected = [(t.rollout, i, im.checksum) for t in traces for i, im in enumerate(t.images)]
    micro_batches = len(bins)
    del samples, bins, per_rank, batches, builder
    gc.collect()
    retained = procmem.rss_bytes() - baseline
    procmem.malloc_trim()
    retained_trimmed = procmem.rss_bytes() - baseline
    return OrchestratorResult(
        samples=len(traces), micro_batches=micro_batches, images=images, unique_images=unique,
        pixel_bytes=pixel_bytes if payload == PIXELS else 0, ref_bytes=ref_bytes, bytes_per_rank=sizes,
        traces_bytes=traces_path.stat().st_size, baseline_rss_bytes=baseline, held_traces_bytes=held,
        peak_bytes=peak, retained_bytes=retained, retained_trimmed_bytes=retained_trimmed, cpu_s=cpu,
        build_s=build_s, pack_s=pack_s, encode_s=encode_s, ship_s=ship_s, rederive_cpu_s=derive.cpu_s,
        processor_runs=derive.runs, expected=expected, longest_sample=longest,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    np.random.seed(0)
    return serve(argv, PROCESS_NAME, OrchestratorJob, run, lambda job: "orchestrator")


if __name__ == "__main__":
    exit_now(main())
