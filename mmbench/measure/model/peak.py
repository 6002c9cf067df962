"""The peaks: the client's RSS above its baseline, and the engine's RSS, at their highest.

The client peaks late in the run, when the trajectories hold (nearly) all they will retain and the
last turn's request bodies, the largest, are alive. Its peak is the sum of three parts:

- live: the data the model predicts it retains (first principles, see the package doc);
- slack: freed memory the allocator keeps resident at the end (retained raw minus live). The
  request bodies' base64 text and the renderer's float32 temporaries are allocated on glibc's
  heaps once its dynamic mmap threshold has risen past them, and the holes they leave between the
  live arrays stay resident. It grows with the bodies that were alive at once (their text), the
  pixels the rollouts render at once, and the arrays the renderer caches evict (made, kept for a
  while, then freed). float32-sized throughout: the renderer makes float32 pixels before any cast.
  With a fixed mmap threshold below the pixel size every large buffer is mmapped and returned on
  free, so there is none (measured: retained raw within 0.5 % of live);
- transient: what is alive only while requests are in flight (peak minus retained raw). One build
  holds a few copies of its body (the torch.cat batch, each item's base64 text, the JSON body), and
  each body waiting for the engine is held twice (the bytes and asyncio's write-buffer copy of what
  the socket has not taken yet: measured 61 MiB per 64 MiB body held by a server that reads
  nothing). How many bodies are alive at once depends on how fast the engine answers against how
  fast the client builds: a term per doubling of K (the engine works through bodies while the
  client builds the next ones) and one per rollout (every rollout's request waiting on an engine
  that answers one at a time), each fitted. Renders in flight add the renderer's float32
  temporaries (the resized image as float32, the frames, the patches: ~2.5 x the pixels each).

trim_after_build, where it trims the largest builds, returns most of the slack and, the builds being
slower, spreads the bodies out: both shrink by `trim_factor`. A slower codec does the same to the
bodies alive at once (client and engine): `codec_peak`, fitted on that codec's points apart.

The engine's peak is its baseline, its cache (the model's, from the driver simulation) and the
bodies it holds at once (each received in chunks, joined, then decoded into the items it stores).

Every calibrated coefficient is in mmbench.measure.model.constants, with the data it was fitted on;
mmbench.measure.model.calibration re-fits them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmbench.config import PointConfig
from mmbench.facts import Mode
from mmbench.measure.model.constants import Constants
from mmbench.measure.model.parts import BodySize
from mmbench.measure.model.simulation import DriverCounts

# trim_after_build=auto trims when a build grew RSS by this much (as mmbench.world.rollout does); a
# build grows it by about _BUILD_COPIES x its pixels (the batch, the base64 text, the body), so auto
# trims only where that reaches it.
TRIM_AUTO_GROWTH = 64 * 1024**2
_BUILD_COPIES = 3.7
# glibc's dynamic mmap threshold never rises above this (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit):
# larger buffers are always mmapped and returned to the kernel when freed.
MMAP_THRESHOLD_MAX = 32 * 1024**2
# Renders run on the default thread pool of asyncio.to_thread: min(32, cores + 4) threads, 6 here.
RENDER_THREADS = 6


@dataclass(frozen=True, slots=True)
class PeakInputs:
    """What the peaks are made of, in bytes or counts (see the module doc)."""

    k: int
    live: int  # the model's retained (live) bytes
    largest_body: int  # the largest request body of the point
    last_turn_body: int  # the mean body of the last turn, per rollout (resends included)
    last_turn_full_items: float  # the mean items shipped in full in the last turn, per rollout
    item_text_float32: int  # one full item's base64 text, with float32 pixels
    pixel_float32: int  # one image's pixels at float32
    renders_in_flight: int  # renders that can run at once: min(K, pool, threads)
    evicted: float  # pixel arrays the renderer caches made, held a while, then evicted (freed)
    trims: bool  # trim_after_build trims the largest builds
    slack_free: bool  # a fixed mmap threshold returns every large buffer on free
    codec: str = "fast"  # the wire codec: its builds' speed sets how many bodies are alive at once

    @property
    def log2_k(self) -> float:
        return math.log2(self.k)


def trims(config: PointConfig, largest_request_pixel_bytes: int) -> bool:
    """Whether trim_after_build trims the largest builds of this point (auto: only when a build can
    grow RSS by TRIM_AUTO_GROWTH; never at small sizes)."""
    policy = config.trim_after_build
    return policy == "always" or (
        policy == "auto" and _BUILD_COPIES * largest_request_pixel_bytes >= TRIM_AUTO_GROWTH
    )


def peak_inputs(
    config: PointConfig, mode: Mode, sim: DriverCounts, live: int, body: BodySize,
    body_float32: BodySize, pixel: int, pixel_float32: int,
) -> PeakInputs:  # fmt: skip
    shapes = [shape for shape, count in sim.request_shapes if count > 0]
    largest = max(shapes, key=lambda s: body(*s))
    last = [(shape, count) for shape, count in sim.request_shapes if shape[0] == config.turns]
    k = config.rollouts
    threshold = config.malloc_mmap_threshold
    return PeakInputs(
        k=k,
        live=live,
        largest_body=body(*largest),
        last_turn_body=int(sum(count * body(*s) for s, count in last) / k),
        last_turn_full_items=sum(count * s[2] for s, count in last) / k,
        item_text_float32=body_float32.wire,
        pixel_float32=pixel_float32,
        renders_in_flight=min(k, config.pool_size, RENDER_THREADS) if mode.renders else 0,
        evicted=0.0
        if mode.stores_pixels
        else max(0.0, sim.renderer_cache_misses - sim.renderer_cache_entries),
        trims=trims(config, largest[2] * pixel),
        slack_free=0 < threshold <= pixel,
        codec=config.codec,
    )


def slack_basis(p: PeakInputs) -> list[float]:
    """The allocator's slack is these, each times its coefficient (Constants.slack): the base64 text
    of the last turn's items of all K rollouts, K images, and the images the renderer caches
    evicted, each only where glibc takes such a buffer from a heap (below its largest mmap
    threshold; larger ones are mmapped and leave no hole), and fixed bytes."""
    if p.slack_free:
        return [0.0] * 6
    text, pixels = _heap(p.item_text_float32), _heap(p.pixel_float32)
    return [
        p.k * p.last_turn_full_items * text, p.log2_k * p.last_turn_full_items * text,
        p.k * pixels, p.log2_k * pixels, p.evicted * pixels, 1.0,
    ]  # fmt: skip


def _heap(size: int) -> int:
    """A buffer's size where glibc may take it from a heap once its threshold has risen, else 0."""
    return size if size < MMAP_THRESHOLD_MAX else 0


def transient_basis(p: PeakInputs) -> list[float]:
    """The transient is these, each times its coefficient (Constants.transient): bodies above
    glibc's largest mmap threshold are mmapped, so every copy adds to RSS while it lives; smaller
    ones come from the heap once the threshold has risen past them, mostly into holes already
    resident (the slack), so they add less."""
    big, small = _split(p.largest_body)
    last_big, last_small = _split(p.last_turn_body)
    return [
        big, p.log2_k * last_big, p.k * last_big, small, p.log2_k * last_small, p.k * last_small,
        p.renders_in_flight * p.pixel_float32, 1.0,
    ]  # fmt: skip


def _split(size: int) -> tuple[int, int]:
    """(size, 0) for a buffer glibc always mmaps, (0, size) for one it may take from a heap."""
    return (size, 0) if size >= MMAP_THRESHOLD_MAX else (0, size)


def dot(a: list[float], b: tuple[float, ...]) -> float:
    """A basis times its coefficients (every calibrated part of the model is one)."""
    return sum(x * y for x, y in zip(a, b, strict=True))


def client_parts(p: PeakInputs, c: Constants) -> dict[str, int]:
    """The client's peak above its baseline, part by part."""
    factor = c.trim_factor if p.trims else 1.0
    codec = c.codec_factors(p.codec)[0]
    return {
        "live": p.live,
        "slack": int(factor * dot(slack_basis(p), c.slack)),
        "transient": int(factor * codec * dot(transient_basis(p), c.transient)),
    }


def client_peak(p: PeakInputs, c: Constants) -> int:
    return sum(client_parts(p, c).values())


def engine_basis(p: PeakInputs) -> list[float]:
    """The engine's bodies at once are these, each times its coefficient (Constants.engine): one as
    large as the largest, last-turn ones per doubling of K and per rollout (its server reads every
    body that arrives while it answers one request at a time)."""
    return [p.largest_body, p.log2_k * p.last_turn_body, p.k * p.last_turn_body]


def engine_peak(p: PeakInputs, cache_bytes: int, c: Constants) -> int:
    """The engine's RSS at its peak: baseline, cache, and the bodies it holds at once."""
    bodies = c.codec_factors(p.codec)[1] * dot(engine_basis(p), c.engine)
    return int(c.engine_baseline + cache_bytes + bodies)
