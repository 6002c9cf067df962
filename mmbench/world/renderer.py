"""The renderer: decode, hash, resize, normalize and patchify a source image; its FIFO cache; a pool.

As in the real renderer, each instance keeps its own cache keyed by image hash holding the whole
processor output, FIFO by insertion and bounded by a count (no byte bound). A hit does not reorder
and still decodes the image (to hash it) but skips preprocessing.

pixel_values are float32 (the processor's output) or, with dtype "bfloat16", cast through torch
as a client does (`tensor.to(torch.bfloat16)`, round to nearest even) and kept as a numpy uint16
array of the bfloat16 bits, so that the rest of the world (sidecar, caches, codec, accounting)
stays numpy. That array owns its buffer: torch writes the converted values straight into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import NAVIT, Geometry
from mmbench.world.sidecar import MMItem

PIXEL_DTYPES = ("float32", "bfloat16")
T = TypeVar("T")


def image_hash(image: Image.Image) -> str:
    """SHA-256 over the decoded RGB bytes followed by the text of the (width, height) tuple."""
    h = hashlib.sha256(image.tobytes())
    h.update(str(image.size).encode())
    return h.hexdigest()[:32]


def preprocess(image: Image.Image, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """pixel_values (rows, C*T*P*P) float32 and image_grid_thw (1, 3) int64 for an RGB image (Kimi:
    (patches, C, P, P) and its grid_thws, see `_preprocess_navit`)."""
    if geometry.resize == NAVIT:
        return _preprocess_navit(image, geometry)
    layout = geometry.layout(*image.size)
    resized = image.resize((layout.resized_width, layout.resized_height), Image.Resampling.BICUBIC)
    arr = np.asarray(resized, dtype=np.float32)  # (H, W, C)
    arr *= 1.0 / 255.0
    arr -= np.asarray(geometry.image_mean, dtype=np.float32)  # each preset's own statistics
    arr /= np.asarray(geometry.image_std, dtype=np.float32)
    p, m, t = geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size
    _, gh, gw = layout.grid_thw
    chw = arr.transpose(2, 0, 1)[None]  # (1, C, H, W)
    frames = np.repeat(chw, t, axis=0)  # a still image repeated over the temporal axis
    c = geometry.channels
    patches = frames.reshape(1, t, c, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = np.ascontiguousarray(patches.reshape(gh * gw, c * t * p * p))
    grid = np.array([layout.grid_thw], dtype=np.int64)
    return pixel_values, grid


def _preprocess_navit(image: Image.Image, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Kimi K2.5's processor (Moonshot's media_utils, as vLLM's and prime-rl's image-only ports
    mirror it): resize with PIL bicubic, pad the uint8 image with zeros below and right, scale to
    [0, 1], subtract the mean and multiply by 1/std, then cut (patches, C, P, P) row-major over the
    patch grid."""
    layout = geometry.layout(*image.size)
    if (layout.resized_width, layout.resized_height) != image.size:
        image = image.resize((layout.resized_width, layout.resized_height), Image.Resampling.BICUBIC)
    arr = np.pad(np.asarray(image), ((0, layout.pad_height), (0, layout.pad_width), (0, 0)))
    x = (arr / 255.0).astype(np.float32)
    x -= np.asarray(geometry.image_mean)
    x *= 1.0 / np.asarray(geometry.image_std)
    p, c = geometry.patch_size, geometry.channels
    _, gh, gw = layout.grid_thw
    patches = x.reshape(gh, p, gw, p, c).transpose(0, 2, 4, 1, 3)
    pixel_values = np.ascontiguousarray(patches.reshape(gh * gw, c, p, p), dtype=np.float32)
    return pixel_values, np.array([layout.grid_thw], dtype=np.int64)


def to_bfloat16_bits(pixel_values: np.ndarray) -> np.ndarray:
    """float32 pixels cast to bfloat16 by torch, as a numpy uint16 array of the bits that owns its
    buffer (torch converts straight into it: no intermediate tensor is kept)."""
    import torch  # here, not at the top: the engine preprocesses with this module and needs no torch

    src = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
    out = np.empty(pixel_values.shape, dtype=np.uint16)
    torch.from_numpy(out.view(np.int16)).view(torch.bfloat16).copy_(src)
    return out


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bits (exact: bfloat16 is float32's upper half)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def pixel_itemsize(dtype: str) -> int:
    """Bytes per pixel_values element for a dtype name."""
    if dtype not in PIXEL_DTYPES:
        raise ValueError(f"unknown pixel dtype {dtype!r}; choose one of: {', '.join(PIXEL_DTYPES)}")
    return 2 if dtype == "bfloat16" else 4


class FifoCache:
    """Bounded by a count; FIFO by insertion; a hit does not reorder. max_items 0 disables it."""

    def __init__(self, max_items: int) -> None:
        if max_items < 0:
            raise ValueError(f"image_cache_max must be >= 0, got {max_items}")
        self.max_items = max_items
        self._data: OrderedDict[str, MMItem] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> MMItem | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: MMItem) -> None:
        if self.max_items == 0 or key in self._data:
            return
        self._data[key] = value
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)

    def keys(self) -> list[str]:
        return list(self._data)

    def values(self) -> Iterator[MMItem]:
        return iter(self._data.values())


@dataclass(frozen=True, slots=True)
class Rendered:
    mm_hash: str
    item: MMItem  # with pixel_values
    cache_hit: bool


def decode_image(source: bytes) -> Image.Image:
    """The encoded source image decoded to RGB (what is hashed and preprocessed)."""
    with Image.open(io.BytesIO(source)) as opened:
        return opened.convert("RGB")


def process_image(
    image: Image.Image, geometry: Geometry, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """The processor output for a decoded image: pixel_values in `dtype` (bfloat16 as uint16 bits)
    and image_grid_thw. The renderer (client side) and the engine (raw media) both call this."""
    pixel_values, grid = preprocess(image, geometry)
    if dtype == "bfloat16":
        pixel_values = to_bfloat16_bits(pixel_values)  # the float32 array is freed here
    return pixel_values, grid


class Renderer:
    def __init__(self, geometry: Geometry, image_cache_max: int = 32, dtype: str = "float32") -> None:
        pixel_itemsize(dtype)  # validates
        self.geometry = geometry
        self.dtype = dtype
        self.cache = FifoCache(image_cache_max)

    def process(self, source: bytes) -> Rendered:
        image = decode_image(source)
        mm_hash = image_hash(image)
        cached = self.cache.get(mm_hash)
        if cached is not None:
            return Rendered(mm_hash, cached, True)
        pixel_values, grid = process_image(image, self.geometry, self.dtype)
        item = MMItem(grid, pixel_checksum(pixel_values), pixel_values)
        self.cache.put(mm_hash, item)
        return Rendered(mm_hash, item, False)


class Pool(Generic[T]):
    """Members checked out one user at a time (a lock for one member, a queue for several): the
    pool semantics of the library's pool factory, for mmbench's renderers and the library's own."""

    def __init__(self, members: list[T]) -> None:
        if not members:
            raise ValueError("pool_size must be >= 1, got 0")
        self.members = members
        # asyncio primitives bind to the loop that first waits on them: made per loop, lazily.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._queue: asyncio.Queue[T] | None = None

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        if len(self.members) == 1:
            self._lock = asyncio.Lock()
        else:
            self._queue = asyncio.Queue()
            for r in self.members:
                self._queue.put_nowait(r)

    @contextlib.asynccontextmanager
    async def checkout(self) -> AsyncIterator[T]:
        self._bind()
        if self._lock is not None:
            async with self._lock:
                yield self.members[0]
            return
        assert self._queue is not None
        member = await self._queue.get()
        try:
            yield member
        finally:
            self._queue.put_nowait(member)


class RendererPool(Pool[Renderer]):
    """`pool_size` renderers, checked out per render."""

    def __init__(
        self, geometry: Geometry, pool_size: int = 1, image_cache_max: int = 32, dtype: str = "float32"
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.dtype = dtype
        super().__init__([Renderer(geometry, image_cache_max, dtype) for _ in range(pool_size)])

    @property
    def renderers(self) -> list[Renderer]:
        return self.members

    async def render(self, source: bytes) -> Rendered:
        async with self.checkout() as renderer:
            return await asyncio.to_thread(renderer.process, source)

    @property
    def hits(self) -> int:
        return sum(r.cache.hits for r in self.renderers)

    @property
    def misses(self) -> int:
        return sum(r.cache.misses for r in self.renderers)

    def cached_items(self) -> Iterator[MMItem]:
        for r in self.renderers:
            yield from r.cache.values()
