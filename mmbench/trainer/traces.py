"""The env worker's hand-over to the orchestrator: each trajectory as the mode kept it, one
length-prefixed msgpack `Trace` per rollout in one file (written temp + rename).

The worker writes it after every client reading is taken, so the client's figures do not see it;
the orchestrator reads it back one trace at a time, as a train sink receives traces.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np

from mmbench.config import PointConfig
from mmbench.facts import facts_of
from mmbench.rollout.state import Trajectory
from mmbench.trainer.wire import Trace, TraceImage

_LEN = struct.Struct("<Q")


def _pixels_by_hash(t: Trajectory) -> dict[str, np.ndarray]:
    """Every pixel tensor the trajectory holds, by image hash (hash-only keeps an image's pixels
    in the step that shipped it first only)."""
    out: dict[str, np.ndarray] = {}
    for step in t.steps:
        for h, item in zip(step.sidecar.hashes, step.sidecar.items, strict=True):
            if item.pixel_values is not None and h not in out:
                out[h] = item.pixel_values
    return out


def trace_of(t: Trajectory, config: PointConfig) -> Trace:
    """One rollout's trace (a completed one: the caller leaves failed rollouts out)."""
    facts = facts_of(config)
    last = t.steps[-1]
    conv = t.conversation
    images: list[TraceImage] = []
    tokens = np.asarray(conv.tokens, dtype=np.int32).tobytes()
    if facts.mode.renders:
        sidecar = last.sidecar
        pixels = _pixels_by_hash(t)
        for i, (h, ph, item) in enumerate(
            zip(sidecar.hashes, sidecar.placeholders, sidecar.items, strict=True)
        ):
            pv = pixels.get(h)
            images.append(TraceImage(
                mm_hash=h, grid=[int(x) for x in item.image_grid_thw.reshape(-1)], offset=ph.offset,
                length=ph.length, checksum=item.checksum,
                # the array's own buffer: msgspec writes it without a copy
                pixels=np.ascontiguousarray(pv).reshape(-1).view(np.uint8).data if pv is not None else None,  # type: ignore[arg-type]
                dtype=config.dtype, shape=list(pv.shape) if pv is not None else [],
                source=conv.sources[i],
            ))  # fmt: skip
    else:
        engine_sums = dict(t.counters.media_checksums)  # the last report of each image
        grid = list(facts.layout.grid_thw)
        for i, (url, ph) in enumerate(zip(conv.media, last.placeholders or [], strict=True)):
            key = hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
            images.append(TraceImage(
                mm_hash=key, grid=grid, offset=ph.offset, length=ph.length, checksum=engine_sums.get(i),
                dtype=config.dtype, url=url,
            ))  # fmt: skip
    return Trace(t.rollout, t.rollout // config.group_size, tokens, images)


def write_records(traces: Iterable[Trace], path: Path) -> int:
    """Traces to `path` as they come, one encoded at a time; returns the bytes written."""
    encoder = msgspec.msgpack.Encoder()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    written = 0
    with open(tmp, "wb") as f:
        for trace in traces:
            payload = encoder.encode(trace)
            f.write(_LEN.pack(len(payload)))
            f.write(payload)
            written += _LEN.size + len(payload)
            del payload
    os.replace(tmp, path)
    return written


def write_traces(trajectories: list[Trajectory], config: PointConfig, path: Path) -> int:
    """The completed trajectories to `path` (a failed rollout trains on nothing)."""
    done = (t for t in trajectories if not t.counters.failed and t.steps)
    return write_records((trace_of(t, config) for t in done), path)


def _records(f: BinaryIO) -> Iterator[bytes]:
    while header := f.read(_LEN.size):
        (n,) = _LEN.unpack(header)
        payload = f.read(n)
        if len(payload) != n:
            raise ValueError("the traces file ends inside a record")
        yield payload


def read_traces(path: Path) -> list[Trace]:
    """Every trace in the file, decoded one record at a time (one record's bytes transient)."""
    decoder = msgspec.msgpack.Decoder(Trace)
    with open(path, "rb") as f:
        return [decoder.decode(payload) for payload in _records(f)]
