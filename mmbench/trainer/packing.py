"""The orchestrator's work on one step, as prime-rl does it (research notes, section 1.1 and 1.2):
one training sample per rollout branch with the mode's payload, first-fit packing under seq_len,
bins dealt to the DP ranks, and each rank's batch as one msgpack buffer.

Pure functions of the traces (no process, no measuring): mmbench.trainer.orchestrator runs and
measures them, the model (mmbench.trainer.model) and the tests call them directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from mmbench.trainer.wire import (
    EncodedTensor,
    MicroBatch,
    MMImageRef,
    RankBatch,
    Trace,
    TraceImage,
    UniqueImage,
)
from mmbench.world.geometry import Geometry
from mmbench.world.media import data_url
from mmbench.world.renderer import decode_image, process_image

PIXELS = "pixels"  # what a sample carries for its images: their pixel tensors (prime-rl main) ...
REFS = "refs"  # ... or references the trainer derives pixels from (PR #3320; ephemeral deferred)


def payload_of(mode: str, rederive_at: str) -> str:
    """What the orchestrator ships for a mode's trajectories."""
    if mode in ("raw", "raw-file"):
        return REFS
    if mode.startswith("ephemeral") and rederive_at == "trainer":
        return REFS
    return PIXELS


def source_format(source: bytes) -> str:
    """The encoded image's format, from its magic bytes (the message's data URL names it)."""
    if source.startswith(b"\x89PNG"):
        return "png"
    if source.startswith(b"\xff\xd8"):
        return "jpeg"
    raise ValueError("a source image that is neither PNG nor JPEG")


@dataclass(slots=True)
class Sample:
    """One rollout branch as a training sample (prime-rl's TrainingSample)."""

    rollout: int
    input_ids: np.ndarray  # int32
    mm_token_type_ids: np.ndarray  # int8
    image_ids: list[tuple[int, int]]
    mm_kwargs: dict[str, EncodedTensor] = field(default_factory=dict)
    mm_refs: list[MMImageRef] = field(default_factory=list)
    mm_keys: list[str] = field(default_factory=list)  # dedup
    unique: dict[str, UniqueImage] = field(default_factory=dict)  # dedup: this sample's images

    def __len__(self) -> int:
        return len(self.input_ids)

    def mm_signature(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """prime-rl's compatibility check: keys, dtypes and trailing shapes of mm_kwargs."""
        return tuple(sorted((k, t.dtype, tuple(t.shape[1:])) for k, t in self.mm_kwargs.items()))


@dataclass(slots=True)
class Deriver:
    """Pixels derived again from an encoded image, counted (runs and CPU seconds)."""

    geometry: Geometry
    dtype: str
    runs: int = 0
    cpu_s: float = 0.0

    def __call__(self, source: bytes, grid: list[int]) -> np.ndarray:
        t0 = time.process_time()
        pixels, got = process_image(decode_image(source), self.geometry, self.dtype)
        self.cpu_s += time.process_time() - t0
        self.runs += 1
        if [int(x) for x in got.reshape(-1)] != list(grid):
            # the descriptor the engine answered for says otherwise: never train on it
            raise ValueError(
                f"re-derived grid {got.reshape(-1).tolist()} differs from the trajectory's {grid}"
            )
        return pixels


def _encoded(arr: np.ndarray) -> EncodedTensor:
    return EncodedTensor(str(arr.dtype), list(arr.shape), arr.tobytes())


class SampleBuilder:
    """Builds each trace's sample with the mode's payload."""

    def __init__(
        self, traces: list[Trace], payload: str, derive: Deriver, dedup: bool, pixel_dtype: str
    ) -> None:
        self.payload = payload
        self.derive = derive
        self.dedup = dedup
        self.np_dtype = np.uint16 if pixel_dtype == "bfloat16" else np.float32
        # hash-only: an image another rollout shipped first is in that rollout's trace only
        self.held: dict[str, TraceImage] = {}
        for t in traces:
            for im in t.images:
                if im.pixels is not None:
                    self.held.setdefault(im.mm_hash, im)
        # dedup: each distinct image's payload, made (and its pixels derived) once; the derived array
        # itself is not kept beside its encoded bytes
        self.unique: dict[str, UniqueImage] = {}

    def _pixels(self, im: TraceImage) -> np.ndarray:
        held = im if im.pixels is not None else self.held.get(im.mm_hash)
        if held is not None and held.pixels is not None:
            return np.frombuffer(held.pixels, dtype=self.np_dtype).reshape(held.shape)  # no copy
        if im.source is None:
            raise ValueError(f"image {im.mm_hash} has neither pixels nor a source to derive them from")
        return self.derive(im.source, im.grid)

    def _ref(self, im: TraceImage) -> MMImageRef:
        if im.url is not None:
            return MMImageRef(im.url, im.offset, im.length, im.grid)
        assert im.source is not None
        return MMImageRef(data_url(im.source, source_format(im.source)), im.offset, im.length, im.grid)

    def build(self, trace: Trace) -> Sample:
        ids = np.frombuffer(trace.tokens, dtype=np.int32).copy()
        types = np.zeros(len(ids), dtype=np.int8)
        for im in trace.images:
            types[im.offset : im.offset + im.length] = 1
        sample = Sample(trace.rollout, ids, types, [(trace.rollout, i) for i in range(len(trace.images))])
        if self.dedup:
            for im in trace.images:
                sample.mm_keys.append(im.mm_hash)
                if im.mm_hash not in self.unique:
                    self.unique[im.mm_hash] = (
                        UniqueImage(pixels=_encoded(self._pixels(im)))
                        if self.payload == PIXELS
                        else UniqueImage(ref=self._ref(im))
                    )
                sample.unique[im.mm_hash] = self.unique[im.mm_hash]
        elif self.payload == PIXELS:
            # prime-rl's _encode_mm_kwargs: the images concatenated per key, then bytes of the result
            arrays = [self._pixels(im) for im in trace.images]
            rows = [a.reshape(a.shape[0], -1) if a.ndim > 2 else a for a in arrays]
            joined = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=self.np_dtype)
            del arrays, rows
            sample.mm_kwargs["pixel_values"] = _encoded(joined)
            del joined
            grids = np.asarray([im.grid for im in trace.images], dtype=np.int64).reshape(-1, 3)
            sample.mm_kwargs["image_grid_thw"] = _encoded(grids)
        else:
            sample.mm_refs = [self._ref(im) for im in trace.images]
        return sample


def first_fit(samples: list[Sample], seq_len: int) -> list[list[Sample]]:
    """Bins under seq_len, longest sample first, each into the first bin it fits (and whose
    multimodal tensors are compatible); a sample longer than seq_len gets a bin of its own."""
    bins: list[list[Sample]] = []
    room: list[int] = []
    for s in sorted(samples, key=len, reverse=True):
        for i, b in enumerate(bins):
            if len(s) <= room[i] and b[0].mm_signature() == s.mm_signature():
                b.append(s)
                room[i] -= len(s)
                break
        else:
            bins.append([s])
            room.append(max(0, seq_len - len(s)))
    return bins


def micro_batch(bin_: list[Sample]) -> MicroBatch:
    """A bin as one packed row. prime-rl's _materialize_bin: the first sample's tensors, then each
    later sample's bytes appended with `+=` (a new, larger bytes object each time)."""
    first = bin_[0]
    kwargs = dict(first.mm_kwargs)
    refs: list[MMImageRef] = list(first.mm_refs)
    keys = list(first.mm_keys)
    offset = len(first)
    for s in bin_[1:]:
        for k, t in s.mm_kwargs.items():
            old = kwargs[k]
            data = old.data
            data += t.data  # bytes are immutable: this allocates the joined buffer
            kwargs[k] = EncodedTensor(old.dtype, [old.shape[0] + t.shape[0], *old.shape[1:]], data)
        refs += [MMImageRef(r.url, r.offset + offset, r.length, r.grid) for r in s.mm_refs]
        keys += s.mm_keys
        offset += len(s)
    return MicroBatch(
        input_ids=np.concatenate([s.input_ids for s in bin_]).tobytes(),
        mm_token_type_ids=np.concatenate([s.mm_token_type_ids for s in bin_]).tobytes(),
        seq_lens=[len(s) for s in bin_], image_ids=[i for s in bin_ for i in s.image_ids],
        mm_kwargs=kwargs, mm_refs=refs, mm_keys=keys,
    )  # fmt: skip


def deal(bins: list[list[Sample]], ranks: int) -> list[list[list[Sample]]]:
    """Bins to DP ranks, round robin (prime-rl never splits a multimodal bin to balance ranks)."""
    return [bins[r::ranks] for r in range(ranks)]


def rank_batch(step: int, rank: int, bins: list[list[Sample]]) -> RankBatch:
    """One rank's step; with dedup, every distinct image once in `unique`."""
    unique: dict[str, UniqueImage] = {}
    for b in bins:
        for s in b:
            for k, v in s.unique.items():
                unique.setdefault(k, v)
    return RankBatch(step, rank, [micro_batch(b) for b in bins], unique)
