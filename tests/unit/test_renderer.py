"""mmbench.world.renderer: the FIFO image cache, Renderer.process and the RendererPool."""

from __future__ import annotations

import asyncio
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

import mmbench.world.renderer as renderer_module
from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.renderer import FifoCache, Renderer, RendererPool, image_hash
from mmbench.world.sidecar import MMItem

QWEN2 = get_geometry("qwen2-vl")
QWEN3 = get_geometry("qwen3-vl")


def item(n: int) -> MMItem:
    return MMItem(np.array([[1, n, n]], dtype=np.int64), n)


def source(index: int, width: int = 64, height: int = 48, content: str = "photo") -> bytes:
    return make_source(SourceSpec(width, height, "png", content), 0, 0, index)


def independent_hash(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as opened:
        rgb = np.asarray(opened.convert("RGB"))
    height, width = rgb.shape[:2]
    return hashlib.sha256(rgb.tobytes() + str((width, height)).encode()).hexdigest()[:32]


# ---- FifoCache ----------------------------------------------------------------------------


def test_fifo_evicts_oldest_insertion() -> None:
    cache = FifoCache(2)
    a, b, c = item(1), item(2), item(3)
    cache.put("A", a)
    cache.put("B", b)
    cache.put("C", c)
    assert len(cache) == 2
    assert "A" not in cache
    assert cache.keys() == ["B", "C"]
    assert cache.get("A") is None
    assert cache.get("B") is b
    assert cache.get("C") is c
    assert list(cache.values()) == [b, c]


def test_fifo_hit_does_not_reorder() -> None:
    cache = FifoCache(2)
    cache.put("A", item(1))
    cache.put("B", item(2))
    assert cache.get("A") is not None
    cache.put("C", item(3))
    assert "A" not in cache
    assert "B" in cache
    assert "C" in cache
    assert cache.keys() == ["B", "C"]


def test_fifo_reput_of_present_key_keeps_position_and_value() -> None:
    cache = FifoCache(2)
    first = item(1)
    cache.put("A", first)
    cache.put("B", item(2))
    cache.put("A", item(9))
    assert cache.get("A") is first
    cache.put("C", item(3))
    assert cache.keys() == ["B", "C"]


def test_fifo_hit_and_miss_counters() -> None:
    cache = FifoCache(2)
    assert (cache.hits, cache.misses) == (0, 0)
    assert cache.get("A") is None
    assert (cache.hits, cache.misses) == (0, 1)
    cache.put("A", item(1))
    assert (cache.hits, cache.misses) == (0, 1)  # put counts neither
    cache.get("A")
    cache.get("A")
    cache.get("Z")
    assert (cache.hits, cache.misses) == (2, 2)
    assert "A" in cache
    assert (cache.hits, cache.misses) == (2, 2)  # membership counts neither


def test_fifo_zero_stores_nothing() -> None:
    cache = FifoCache(0)
    cache.put("A", item(1))
    cache.put("B", item(2))
    assert len(cache) == 0
    assert "A" not in cache
    assert cache.keys() == []
    assert cache.get("A") is None
    assert cache.misses == 1
    assert cache.hits == 0


def test_fifo_negative_bound_rejected() -> None:
    with pytest.raises(ValueError, match="-1"):
        FifoCache(-1)


# ---- image_hash ---------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(5, 3), (3, 5), (16, 16)])
def test_image_hash_matches_definition(width: int, height: int) -> None:
    data = source(1, width, height)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    expected = independent_hash(data)
    assert image_hash(image) == expected
    assert len(expected) == 32
    int(expected, 16)


def test_image_hash_depends_on_size_text() -> None:
    # Same bytes, transposed size: the (width, height) suffix must tell them apart.
    raw = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    a = Image.fromarray(raw, "RGB")
    b = Image.fromarray(raw.reshape(3, 2, 3), "RGB")
    assert a.tobytes() == b.tobytes()
    assert image_hash(a) != image_hash(b)


# ---- Renderer.process ---------------------------------------------------------------------


@pytest.mark.parametrize(("geometry", "width", "height"), [(QWEN2, 64, 48), (QWEN3, 40, 30)])
def test_process_output(geometry, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
    data = source(0, width, height)
    rendered = Renderer(geometry, image_cache_max=4).process(data)
    layout = geometry.layout(width, height)
    pixel_values = rendered.item.pixel_values
    assert pixel_values is not None
    assert pixel_values.dtype == np.float32
    assert pixel_values.shape == layout.pixel_shape
    grid = rendered.item.image_grid_thw
    assert grid.dtype == np.int64
    assert grid.shape == (1, 3)
    assert tuple(grid[0].tolist()) == layout.grid_thw
    assert rendered.item.checksum == pixel_checksum(pixel_values)
    assert rendered.mm_hash == independent_hash(data)
    assert rendered.cache_hit is False


def test_second_process_is_cache_hit_with_same_object() -> None:
    renderer = Renderer(QWEN2, image_cache_max=4)
    data = source(0)
    first = renderer.process(data)
    second = renderer.process(data)
    assert first.cache_hit is False
    assert second.cache_hit is True
    assert second.item is first.item
    assert second.item.pixel_values is first.item.pixel_values
    assert second.mm_hash == first.mm_hash
    assert (renderer.cache.hits, renderer.cache.misses) == (1, 1)
    other = renderer.process(source(1))
    assert other.cache_hit is False
    assert other.mm_hash != first.mm_hash
    assert len(renderer.cache) == 2


def test_hit_decodes_and_hashes_but_skips_preprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"open": 0, "hash": 0, "preprocess": 0}
    real_open = Image.open
    real_hash = renderer_module.image_hash
    real_preprocess = renderer_module.preprocess

    def spy_open(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["open"] += 1
        return real_open(*args, **kwargs)

    def spy_hash(image: Image.Image) -> str:
        calls["hash"] += 1
        return real_hash(image)

    def spy_preprocess(image, geometry):  # type: ignore[no-untyped-def]
        calls["preprocess"] += 1
        return real_preprocess(image, geometry)

    monkeypatch.setattr(Image, "open", spy_open)
    monkeypatch.setattr(renderer_module, "image_hash", spy_hash)
    monkeypatch.setattr(renderer_module, "preprocess", spy_preprocess)

    renderer = Renderer(QWEN2, image_cache_max=4)
    data = source(0)
    renderer.process(data)
    assert calls == {"open": 1, "hash": 1, "preprocess": 1}
    hit = renderer.process(data)
    assert hit.cache_hit is True
    assert calls == {"open": 2, "hash": 2, "preprocess": 1}


def test_cache_disabled_always_preprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    count = 0
    real_preprocess = renderer_module.preprocess

    def spy_preprocess(image, geometry):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        return real_preprocess(image, geometry)

    monkeypatch.setattr(renderer_module, "preprocess", spy_preprocess)
    renderer = Renderer(QWEN2, image_cache_max=0)
    data = source(0)
    first = renderer.process(data)
    second = renderer.process(data)
    assert (first.cache_hit, second.cache_hit) == (False, False)
    assert count == 2
    assert second.item is not first.item
    assert first.item.pixel_values is not None and second.item.pixel_values is not None
    assert np.array_equal(first.item.pixel_values, second.item.pixel_values)
    assert len(renderer.cache) == 0


def test_renderer_cache_evicts_fifo() -> None:
    renderer = Renderer(QWEN2, image_cache_max=2)
    a, b, c = source(0), source(1), source(2)
    renderer.process(a)
    renderer.process(b)
    assert renderer.process(a).cache_hit is True
    renderer.process(c)
    assert renderer.process(b).cache_hit is True
    assert renderer.process(a).cache_hit is False


def test_same_pixels_in_different_encodings_share_a_hash() -> None:
    # The key is the decoded pixels, not the encoded bytes.
    data = source(3, 20, 20)
    with Image.open(io.BytesIO(data)) as opened:
        buf = io.BytesIO()
        opened.save(buf, format="PNG", compress_level=9)
    assert buf.getvalue() != data
    renderer = Renderer(QWEN2, image_cache_max=4)
    assert renderer.process(data).cache_hit is False
    assert renderer.process(buf.getvalue()).cache_hit is True


# ---- RendererPool -------------------------------------------------------------------------


@pytest.mark.parametrize("pool_size", [1, 3])
def test_pool_concurrent_renders(pool_size: int) -> None:
    sources = [source(i, 48 + 8 * i, 40) for i in range(5)]
    order = sources + sources[::-1] + sources
    pool = RendererPool(QWEN2, pool_size=pool_size, image_cache_max=8)
    assert len(pool.renderers) == pool_size

    async def main():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(pool.render(s) for s in order))

    results = asyncio.run(main())
    assert len(results) == len(order)
    for data, rendered in zip(order, results, strict=True):
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
        layout = QWEN2.layout(width, height)
        pixel_values = rendered.item.pixel_values
        assert pixel_values is not None
        assert pixel_values.shape == layout.pixel_shape
        assert tuple(rendered.item.image_grid_thw[0].tolist()) == layout.grid_thw
        assert rendered.item.checksum == pixel_checksum(pixel_values)
        assert rendered.mm_hash == independent_hash(data)
    assert pool.hits + pool.misses == len(order)
    assert pool.hits == sum(r.cache_hit for r in results)
    assert pool.misses >= len(sources)
    assert pool.misses <= len(sources) * pool_size
    assert sum(len(r.cache) for r in pool.renderers) == pool.misses
    assert len(list(pool.cached_items())) == pool.misses
    # gather starts the renders in order, so each renderer of the pool takes one of the first.
    assert all(r.cache.hits + r.cache.misses > 0 for r in pool.renderers)
    if pool_size == 1:
        # One renderer, one cache: each source misses exactly once.
        assert (pool.misses, pool.hits) == (len(sources), 2 * len(sources))
    # Renders of the same source agree whatever renderer served them.
    by_hash: dict[str, int] = {}
    for rendered in results:
        by_hash.setdefault(rendered.mm_hash, rendered.item.checksum)
        assert by_hash[rendered.mm_hash] == rendered.item.checksum
    assert len(by_hash) == len(sources)


@pytest.mark.parametrize("pool_size", [1, 3])
def test_pool_reusable_across_event_loops(pool_size: int) -> None:
    sources = [source(i, 32, 32) for i in range(2 * pool_size + 1)]
    pool = RendererPool(QWEN2, pool_size=pool_size, image_cache_max=8)

    async def main():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(pool.render(s) for s in sources))

    first = asyncio.run(main())
    second = asyncio.run(main())
    assert [r.mm_hash for r in first] == [r.mm_hash for r in second]
    assert pool.hits + pool.misses == 2 * len(sources)


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="0"):
        RendererPool(QWEN2, pool_size=0)
