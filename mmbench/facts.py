"""What a point implies, derived once from its PointConfig: the image geometry and every image's
layout, the pixel and cache-item sizes, and what its mode does. The driver, the model and the engine
checks read these instead of each deriving them from the preset's name and the mode's name again.

A mode's behaviour is its transport's capability flags (mmbench.transports): defined once, there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.transports.base import Transport
from mmbench.transports.registry import TRANSPORTS
from mmbench.world.geometry import Geometry, ImageLayout, get_geometry

PIXEL_ITEMSIZE = {"float32": 4, "bfloat16": 2}  # bytes per pixel_values element, per dtype
GRID_BYTES = 3 * 8  # image_grid_thw (1, 3) int64: what the engine's cache charges beside the pixels

#: A mode's behaviour: its transport class, whose flags (`renders`, `stores_pixels`,
#: `needs_engine_cache`, `media`) say what the driver does around it and what the model counts.
Mode = type[Transport]


def mode_of(name: str) -> Mode:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise MmbenchError(f"unknown mode {name!r}; choose one of: {', '.join(TRANSPORTS)}") from None


@dataclass(frozen=True, slots=True)
class PointFacts:
    config: PointConfig
    geometry: Geometry
    layout: ImageLayout  # every image's (a point's images share one size)
    mode: Mode

    @property
    def itemsize(self) -> int:
        return PIXEL_ITEMSIZE[self.config.dtype]

    @property
    def pixel_bytes(self) -> int:
        """One image's pixel_values at the point's dtype."""
        return self.layout.pixel_bytes(self.itemsize)

    @property
    def cache_item_bytes(self) -> int:
        """What the engine's cache charges for one item: its pixels and its grid."""
        return self.pixel_bytes + GRID_BYTES

    @property
    def engine_cache_items(self) -> int:
        """How many items the engine's cache holds (LRU by bytes, items all of one size)."""
        capacity = self.config.engine_cache_bytes
        return capacity // self.cache_item_bytes if self.cache_item_bytes <= capacity else 0

    @property
    def longest_request_tokens(self) -> int:
        """The last turn's prompt (every turn's text, the completions so far, every image's tokens)
        plus the completion it asks for: what an engine's max_model_len must hold."""
        c = self.config
        prompt = c.turns * c.text_tokens_per_turn + (c.turns - 1) * c.completion_tokens
        return prompt + c.turns * c.images_per_turn * self.layout.tokens + c.completion_tokens


@lru_cache(maxsize=1024)  # bounded: a plan or a calibration asks for many points in one process
def facts_of(config: PointConfig) -> PointFacts:
    """The point's facts (a config is frozen, so they are made once per distinct point)."""
    geometry = get_geometry(config.model)
    return PointFacts(config, geometry, geometry.layout(*config.image_wh), mode_of(config.mode))
