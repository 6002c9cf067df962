"""MultiModalData: the sidecar a rendered prompt carries, one modality ("image").

Three parallel lists (hashes, placeholders, items). A descriptor is an item without
`pixel_values`: hash + placeholder + grid (+ the pixel checksum), a few hundred bytes.
Each turn's sidecar lists every image so far; the next turn copies the lists and appends,
sharing the arrays by reference.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class Placeholder:
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class MMItem:
    """One processor output (or, without pixel_values, its descriptor)."""

    image_grid_thw: np.ndarray  # int64, shape (1, 3)
    checksum: int  # crc32 of the pixel bytes, kept so a descriptor can still check the engine
    pixel_values: np.ndarray | None = None

    @property
    def has_pixels(self) -> bool:
        return self.pixel_values is not None

    def descriptor(self) -> MMItem:
        return self if self.pixel_values is None else replace(self, pixel_values=None)


@dataclass(slots=True)
class MultiModalData:
    hashes: list[str] = field(default_factory=list)
    placeholders: list[Placeholder] = field(default_factory=list)
    items: list[MMItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.hashes)

    def extended(
        self, hashes: list[str], placeholders: list[Placeholder], items: list[MMItem]
    ) -> MultiModalData:
        """A new sidecar: these lists copied, the new entries appended (arrays shared)."""
        return MultiModalData(self.hashes + hashes, self.placeholders + placeholders, self.items + items)

    def with_items(self, items: list[MMItem]) -> MultiModalData:
        assert len(items) == len(self.items)
        return MultiModalData(list(self.hashes), list(self.placeholders), items)

    def descriptors_only(self) -> MultiModalData:
        return self.with_items([it.descriptor() for it in self.items])


def descriptor_nbytes(item: MMItem, mm_hash: str) -> int:
    """Approximate Python heap bytes of one descriptor (hash str, placeholder, grid, item)."""
    grid = item.image_grid_thw
    return (
        sys.getsizeof(mm_hash)
        + 56  # Placeholder instance (slots)
        + sys.getsizeof(grid)
        + 64  # MMItem instance (slots) + checksum int
    )
