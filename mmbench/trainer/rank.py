"""A trainer stand-in: one process per DP rank and materialization policy (`python -m
mmbench.trainer.rank JOB OUT`). It receives its rank's batch, makes the pixel tensors each
micro-batch's forward pass needs, runs a CPU stand-in of the forward that touches every pixel, and
reports the checksum of every pixel tensor it used. It writes one JSON `RankResult` to OUT.

Materialization (research notes 1.1, 1.2):
- eager (prime-rl main, and the ephemeral branch's data loader): every micro-batch of the step
  up front; shipped pixels through `bytearray` (the copy `torch.frombuffer(bytearray(...))` makes);
- lazy (PR #3320): each micro-batch's pixels just before its forward, dropped after it.
Refs are derived with the point's processor (mmbench's sim, checked equal to renderers 0.1.12):
a data: URL decoded, a file:// URL read from the shared media directory.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from mmbench.trainer.entry import exit_now, serve
from mmbench.trainer.wire import (
    EncodedTensor,
    MicroBatch,
    MMImageRef,
    RankBatch,
    RankResult,
    TrainerJob,
    UniqueImage,
)
from mmbench.world import procmem
from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import Geometry, get_geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.media import load_media
from mmbench.world.renderer import bfloat16_bits_to_float32, decode_image, process_image

PROCESS_NAME = "mmbench-trainer"
HIDDEN = 64  # the forward stand-in's output width (a patch embedding's, shrunk)
MAX_MEDIA_BYTES = 1 << 30
Image = tuple[tuple[int, int], np.ndarray]  # (rollout, image index), its pixel tensor


@dataclass(slots=True)
class Materializer:
    """Makes a micro-batch's pixel tensors; counts runs, CPU, disk reads and the pixel bytes alive."""

    geometry: Geometry
    dtype: str
    media_dir: Path | None
    unique: dict[str, UniqueImage] = field(default_factory=dict)
    runs: int = 0
    cpu_s: float = 0.0
    disk_bytes: int = 0

    @property
    def np_dtype(self) -> type:
        return np.uint16 if self.dtype == "bfloat16" else np.float32

    def _from_bytes(self, t: EncodedTensor) -> np.ndarray:
        return np.frombuffer(bytearray(t.data), dtype=self.np_dtype).reshape(t.shape)

    def _derive(self, ref: MMImageRef) -> np.ndarray:
        if ref.url.startswith("file:"):
            source = load_media(ref.url, self.media_dir, MAX_MEDIA_BYTES)
            self.disk_bytes += len(source)
        else:
            source = load_media(ref.url, None, MAX_MEDIA_BYTES)
        pixels, grid = process_image(decode_image(source), self.geometry, self.dtype)
        self.runs += 1
        if [int(x) for x in grid.reshape(-1)] != list(ref.grid):
            raise ValueError(f"derived grid {grid.reshape(-1).tolist()} differs from the engine's {ref.grid}")
        return pixels

    def images(self, mb: MicroBatch, cache: dict[str, np.ndarray]) -> list[Image]:
        """The micro-batch's pixel tensors in slot order. `cache` holds what dedup already made
        (eager: the step's; lazy: this micro-batch's)."""
        t0 = time.process_time()
        out: list[Image] = []
        if mb.mm_keys:
            for image_id, key in zip(mb.image_ids, mb.mm_keys, strict=True):
                if key not in cache:
                    u = self.unique[key]
                    if u.pixels is not None:
                        cache[key] = self._from_bytes(u.pixels)
                    else:
                        assert u.ref is not None
                        cache[key] = self._derive(u.ref)
                out.append((image_id, cache[key]))
        elif "pixel_values" in mb.mm_kwargs:
            joined = self._from_bytes(mb.mm_kwargs["pixel_values"])
            grids = np.frombuffer(mb.mm_kwargs["image_grid_thw"].data, dtype=np.int64).reshape(-1, 3)
            start = 0
            for image_id, grid in zip(mb.image_ids, grids, strict=True):
                rows = int(np.prod(grid))
                out.append((image_id, joined[start : start + rows]))
                start += rows
        else:
            out = [
                (image_id, self._derive(ref)) for image_id, ref in zip(mb.image_ids, mb.mm_refs, strict=True)
            ]
        self.cpu_s += time.process_time() - t0
        return out


class Forward:
    """A CPU stand-in for the forward pass: every pixel through a patch-embedding matmul (float32,
    a fixed random weight per patch width)."""

    def __init__(self) -> None:
        self.weights: dict[int, np.ndarray] = {}
        self.cpu_s = 0.0

    def __call__(self, images: list[Image]) -> float:
        t0 = time.process_time()
        total = 0.0
        for _, pixels in images:
            x = pixels.reshape(pixels.shape[0], -1)
            if x.dtype == np.uint16:
                x = bfloat16_bits_to_float32(x)
            w = self.weights.get(x.shape[1])
            if w is None:
                rng = np.random.default_rng(x.shape[1])
                w = self.weights[x.shape[1]] = rng.standard_normal((x.shape[1], HIDDEN), dtype=np.float32)
            total += float((x @ w).sum())
        self.cpu_s += time.process_time() - t0
        return total


def _nbytes(images: list[Image]) -> int:
    return sum(p.nbytes for _, p in {id(p): (i, p) for i, p in images}.values())


def _plant(images: list[Image]) -> None:
    """The test hook: one pixel of the first image changed (its lowest bit)."""
    if images:
        _, pixels = images[0]
        flat = pixels.reshape(-1).view(np.uint8)
        flat[0] ^= 1


def warm_up(job: TrainerJob, forward: Forward) -> None:
    """One-time costs (PIL's codecs, the first matmul, msgspec) before the baseline."""
    source = make_source(SourceSpec(64, 64, "png", "flat"), 0, 0, 0)
    pixels, _ = process_image(decode_image(source), get_geometry(job.model), job.dtype)
    forward([((0, 0), pixels)])
    forward.cpu_s = 0.0
    pixel_checksum(pixels)
    msgspec.msgpack.decode(msgspec.msgpack.encode(RankBatch(0, 0, [])), type=RankBatch)


def run(job: TrainerJob) -> RankResult:
    forward = Forward()
    warm_up(job, forward)
    gc.collect()
    gc.freeze()  # what is alive now (modules, the warm-up's state) is out of the collector's way
    procmem.malloc_trim()
    baseline = procmem.rss_bytes()
    procmem.reset_peak()
    cpu0 = time.process_time()
    raw = Path(job.batch).read_bytes()
    received = len(raw)
    batch = msgspec.msgpack.decode(raw, type=RankBatch)
    del raw  # the receive buffer, once decoded
    media_dir = Path(job.media_dir).resolve() if job.media_dir else None
    m = Materializer(get_geometry(job.model), job.dtype, media_dir, dict(batch.unique))
    checksums: list[tuple[int, int, int]] = []
    held_max = 0
    planted = not job.plant

    def use(images: list[Image]) -> None:
        nonlocal planted
        if not planted:
            _plant(images)
            planted = True
        forward(images)
        checksums.extend((rollout, index, pixel_checksum(p)) for (rollout, index), p in images)

    if job.policy == "eager":
        cache: dict[str, np.ndarray] = {}
        made = [m.images(mb, cache) for mb in batch.micro_batches]  # the whole step, up front
        held_max = _nbytes([im for images in made for im in images])
        for images in made:
            use(images)
        del made, cache
    else:
        for mb in batch.micro_batches:
            images = m.images(mb, {})  # made just before its forward, dropped after it
            held_max = max(held_max, _nbytes(images))
            use(images)
            del images
    cpu = time.process_time() - cpu0
    hwm = procmem.hwm_bytes()
    peak = (hwm if hwm is not None else procmem.rss_bytes()) - baseline
    return RankResult(
        rank=job.rank, policy=job.policy, bytes_received=received, micro_batches=len(batch.micro_batches),
        images=len(checksums), baseline_rss_bytes=baseline, peak_bytes=peak, held_pixel_bytes=held_max,
        cpu_s=cpu, materialize_cpu_s=m.cpu_s, forward_cpu_s=forward.cpu_s, processor_runs=m.runs,
        disk_bytes_read=m.disk_bytes, checksums=checksums,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return serve(argv, PROCESS_NAME, TrainerJob, run, lambda job: f"trainer rank {job.rank}")


if __name__ == "__main__":
    exit_now(main())
