"""The program's own accounting of what the client holds, next to what RSS says.

Pixel arrays are identified by their data pointer, so an array shared by several steps, or by a
step and a renderer cache, is counted once. Python object sizes come from sys.getsizeof.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from mmbench.rollout import Trajectory
from mmbench.world.sidecar import MMItem


@dataclass(frozen=True, slots=True)
class Accounting:
    stored_pixel_bytes: int  # distinct pixel buffers reachable from the trajectories
    stored_pixel_arrays: int
    source_bytes: int  # the images the conversations hold: encoded sources, or (raw) their URLs
    descriptor_bytes: int  # sidecar metadata of every step: items, grids, hashes, placeholders, lists
    other_bytes: int  # token streams, completions, logprobs, step objects
    renderer_cache_bytes: int  # distinct pixel buffers in the renderer caches
    renderer_cache_only_bytes: int  # ...of which no trajectory holds: the cache is their only holder
    renderer_cache_items: int

    @property
    def live_bytes(self) -> int:
        """What the client's live data occupies: the sum the trimmed retained RSS is compared with."""
        return (
            self.stored_pixel_bytes
            + self.source_bytes
            + self.descriptor_bytes
            + self.other_bytes
            + self.renderer_cache_only_bytes
        )

    def to_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["live_bytes"] = self.live_bytes
        return out


def _buffer_key(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def _pixel_buffers(items: Iterable[MMItem]) -> dict[int, int]:
    seen: dict[int, int] = {}
    for item in items:
        pv = item.pixel_values
        if pv is not None:
            seen[_buffer_key(pv)] = int(pv.nbytes)
    return seen


def account(trajectories: list[Trajectory], cached: Iterable[MMItem]) -> Accounting:
    stored = _pixel_buffers(item for t in trajectories for s in t.steps for item in s.sidecar.items)
    in_cache = _pixel_buffers(cached)
    seen: set[int] = set()

    def once(obj: object, size: int) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return size

    descriptor = 0
    other = 0
    source = 0
    for t in trajectories:
        conv = t.conversation
        # the images as the conversation holds them: encoded sources, or (raw media) their URLs
        source += sum(len(s) for s in conv.sources) + sum(map(sys.getsizeof, conv.media))
        other += sum(map(sys.getsizeof, (conv.tokens, conv.rendered, conv.sources, conv.media)))
        for step in t.steps:
            other += sys.getsizeof(step) + sys.getsizeof(step.completion_ids) + sys.getsizeof(step.logprobs)
            other += sum(map(sys.getsizeof, step.completion_ids)) + sum(map(sys.getsizeof, step.logprobs))
            if step.placeholders is not None:  # raw media: the engine's placeholders
                descriptor += sys.getsizeof(step.placeholders) + sum(map(sys.getsizeof, step.placeholders))
            sc = step.sidecar
            descriptor += once(sc, sys.getsizeof(sc))
            for lst in (sc.hashes, sc.placeholders, sc.items):
                descriptor += once(lst, sys.getsizeof(lst))
            for h, ph, item in zip(sc.hashes, sc.placeholders, sc.items, strict=True):
                descriptor += once(h, sys.getsizeof(h)) + once(ph, sys.getsizeof(ph))
                descriptor += once(item, sys.getsizeof(item))
                grid = item.image_grid_thw
                descriptor += once(grid, sys.getsizeof(grid))
    cache_only = sum(size for key, size in in_cache.items() if key not in stored)
    return Accounting(
        stored_pixel_bytes=sum(stored.values()),
        stored_pixel_arrays=len(stored),
        source_bytes=source,
        descriptor_bytes=descriptor,
        other_bytes=other,
        renderer_cache_bytes=sum(in_cache.values()),
        renderer_cache_only_bytes=cache_only,
        renderer_cache_items=len(in_cache),
    )
