"""The transport contract: what each item of a request ships as, and what a trajectory stores.

A transport never prints and never does I/O; the rollout driver (mmbench.rollout) asks it three
things per turn: `plan` (what each of the turn's items ships as: its pixels, a null slot, or its
source as a media URL), `stored` (the sidecar a step keeps), and it tells it what happened
(`on_success` / `on_error`), which is where hash-only remembers hashes. Two capability flags say
what the driver must do around it: `renders` (the client runs the image processor; False for the
raw-media modes, whose engine preprocesses) and `media` (how a raw item is referenced).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum
from typing import ClassVar

from mmbench.world.sidecar import MultiModalData

DEFAULT_SENT_HASHES_MAX = 16_384


class Ship(StrEnum):
    """What one item of a request ships as."""

    PIXELS = "pixels"  # the processed item (pixel_values + grid), base64 in `features.kwargs_data`
    NULL = "null"  # a null slot: the engine serves the item from its cache by hash
    MEDIA = "media"  # the source image as a URL in `content_parts`: the engine preprocesses it


class SentHashes:
    """The hashes a client has sent to one (endpoint, model): an LRU bounded by a count."""

    def __init__(self, max_items: int = DEFAULT_SENT_HASHES_MAX) -> None:
        if max_items < 1:
            raise ValueError(f"sent_hashes_max must be >= 1, got {max_items}")
        self.max_items = max_items
        self._lru: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, mm_hash: str) -> bool:
        return mm_hash in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def touch(self, mm_hash: str) -> None:
        self._lru[mm_hash] = None
        self._lru.move_to_end(mm_hash)
        while len(self._lru) > self.max_items:
            self._lru.popitem(last=False)

    def forget(self, mm_hash: str) -> None:
        self._lru.pop(mm_hash, None)


class Transport:
    """FULL semantics by default; the other modes override what differs."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: sends null slots, so it needs an engine that resolves them from its cache
    needs_engine_cache: ClassVar[bool] = False
    #: trajectories keep pixel_values for the images they shipped
    stores_pixels: ClassVar[bool] = True
    #: the client runs the image processor (False: raw media, the engine preprocesses)
    renders: ClassVar[bool] = True
    #: how a raw item is referenced in the request: "data" (data: URL) or "file" (file:// URL)
    media: ClassVar[str | None] = None

    def __init__(self, sent_hashes_max: int = DEFAULT_SENT_HASHES_MAX) -> None:
        self.sent_hashes_max = sent_hashes_max
        self._sent: dict[tuple[str, str], SentHashes] = {}

    def sent(self, endpoint: str, model: str) -> SentHashes:
        key = (endpoint, model)
        if key not in self._sent:
            self._sent[key] = SentHashes(self.sent_hashes_max)
        return self._sent[key]

    def plan(self, endpoint: str, model: str, hashes: list[str]) -> list[Ship]:
        """What each item (named by its mm hash) ships as."""
        return [Ship.PIXELS] * len(hashes)

    def on_success(self, endpoint: str, model: str, hashes: list[str]) -> None:
        """The engine accepted a request carrying these hashes."""

    def on_error(self, endpoint: str, model: str, hashes: list[str]) -> None:
        """The engine refused a request carrying these hashes."""

    def stored(self, sidecar: MultiModalData, plan: list[Ship]) -> MultiModalData:
        """The sidecar the returned step keeps."""
        return sidecar
