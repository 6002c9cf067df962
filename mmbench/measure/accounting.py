"""The program's own accounting of what the client holds, next to what RSS says.

Pixel arrays are identified by their data pointer, so an array shared by several steps, or by a
step and a renderer cache, is counted once. Python object sizes come from sys.getsizeof. The
renderers library's trajectory objects (--renderer renderers) are read by an adapter that walks
them, each object once, into the same categories.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from mmbench.backends.renderers.state import Chat, LibraryStep
from mmbench.record import Accounting
from mmbench.rollout import Trajectory
from mmbench.world.sidecar import MMItem


def _buffer_key(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def _pixel_buffers(items: Iterable[MMItem]) -> dict[int, int]:
    seen: dict[int, int] = {}
    for item in items:
        pv = item.pixel_values
        if pv is not None:
            seen[_buffer_key(pv)] = int(pv.nbytes)
    return seen


def _deep_size(root: object, seen: set[int], pixels: dict[int, int]) -> int:
    """Bytes of `root` and of everything it reaches that `seen` does not hold yet, each object once
    (the library's lists share their elements turn to turn). Arrays under a "pixel_values" key go to
    `pixels` (by buffer) instead of the sum."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "pixel_values" and isinstance(value, np.ndarray):
                    seen.add(id(value))
                    pixels[_buffer_key(value)] = int(value.nbytes)
                else:
                    stack.extend((key, value))
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif is_dataclass(obj) and not isinstance(obj, type):
            if hasattr(obj, "__dict__"):
                total += sys.getsizeof(obj.__dict__)
            stack.extend(getattr(obj, f.name) for f in fields(obj))
    return total


@dataclass(slots=True)
class _LibraryParts:
    pixels: dict[int, int]  # distinct pixel buffers the library's sidecars hold
    descriptor: int
    other: int


def _library_parts(trajectories: list[Trajectory]) -> _LibraryParts:
    """What the library's objects hold beyond the parts every trajectory has (sources, completions,
    logprobs, step objects, which `account` counts): its sidecars (MultiModalData; the engine's
    placeholders in the raw modes) and its per-token lists, results and chat messages."""
    parts = _LibraryParts({}, 0, 0)
    # counted by `account` already: the encoded sources and media URLs, completions and logprobs
    seen: set[int] = set()
    for t in trajectories:
        conv = t.conversation
        seen.update(map(id, conv.sources))
        seen.update(map(id, conv.media))
        for step in t.steps:
            for lst in (step.completion_ids, step.logprobs):
                seen.add(id(lst))
                seen.update(map(id, lst))
    for t in trajectories:
        if isinstance(t.conversation, Chat):
            parts.other += _deep_size(t.conversation.messages, seen, parts.pixels)
        for step in t.steps:
            if not isinstance(step, LibraryStep):
                continue
            if step.prompt is not None:
                parts.descriptor += _deep_size(step.prompt.multi_modal_data, seen, parts.pixels)
                parts.other += _deep_size(step.prompt, seen, parts.pixels)
            if step.result is not None:
                parts.descriptor += _deep_size(step.result.get("mm_placeholders"), seen, parts.pixels)
                parts.other += _deep_size(step.result, seen, parts.pixels)
    return parts


def account(trajectories: list[Trajectory], cached: Iterable[MMItem]) -> Accounting:
    library = _library_parts(trajectories)
    stored = _pixel_buffers(item for t in trajectories for s in t.steps for item in s.sidecar.items)
    stored.update(library.pixels)
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
    descriptor += library.descriptor
    other += library.other
    cache_only = sum(size for key, size in in_cache.items() if key not in stored)
    pixels = sum(stored.values())
    return Accounting(
        stored_pixel_bytes=pixels,
        source_bytes=source,
        descriptor_bytes=descriptor,
        other_bytes=other,
        renderer_cache_bytes=sum(in_cache.values()),
        renderer_cache_only_bytes=cache_only,
        # what the trimmed retained RSS is compared with: the data alive, each buffer once
        live_data_bytes=pixels + source + descriptor + other + cache_only,
    )
