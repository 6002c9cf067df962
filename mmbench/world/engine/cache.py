"""The engine's processed multimodal item cache: keyed by mm hash, LRU by bytes (as vLLM's)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mmbench.world.codec import DecodedItem


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class MMItemCache:
    """capacity_bytes 0 disables the cache: nothing is stored and every lookup misses."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[str, DecodedItem] = OrderedDict()
        self.nbytes = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, mm_hash: str) -> bool:
        return mm_hash in self._items

    def get(self, mm_hash: str) -> DecodedItem | None:
        item = self._items.get(mm_hash)
        if item is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(mm_hash)
        self.stats.hits += 1
        return item

    def put(self, mm_hash: str, item: DecodedItem) -> None:
        size = item.nbytes
        if size > self.capacity_bytes:
            return  # larger than the whole cache (or the cache is off): not stored
        old = self._items.pop(mm_hash, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._items[mm_hash] = item
        self.nbytes += size
        while self.nbytes > self.capacity_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= evicted.nbytes
            self.stats.evictions += 1

    def drop(self, mm_hash: str) -> bool:
        item = self._items.pop(mm_hash, None)
        if item is None:
            return False
        self.nbytes -= item.nbytes
        return True

    def keys(self) -> list[str]:
        return list(self._items)

    def sizes(self) -> dict[str, int]:
        """Every cached item's bytes by its hash (a fleet counts the items cached twice)."""
        return {mm_hash: item.nbytes for mm_hash, item in self._items.items()}
