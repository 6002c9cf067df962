"""dtype bfloat16 end to end in-process: the renderer casts through torch and keeps the bits as
numpy uint16, build_body ships them with dtype "bfloat16", the engine decodes and checksums the
same bytes, and the model counts 2 bytes a pixel (docs domain.md sections 3 and 5)."""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest
import torch

from mmbench.config import PointConfig
from mmbench.measure.model import predict
from mmbench.world.client import build_body
from mmbench.world.codec import decode_item, get_codec, item_wire_bytes, pixel_checksum
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.renderer import (
    Renderer,
    RendererPool,
    bfloat16_bits_to_float32,
    to_bfloat16_bits,
)
from mmbench.world.sidecar import MultiModalData, Placeholder
from mmbench.world.wire import GENERATE_PATH

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

QWEN3 = get_geometry("qwen3-vl")
LAYOUT = QWEN3.layout(64, 64)  # padded up to 256x256: (256, 1536) pixels, 64 tokens


def source(index: int) -> bytes:
    return make_source(SourceSpec(64, 64, "png", "photo"), 0, 0, index)


def torch_bits(values: np.ndarray) -> np.ndarray:
    """The reference: what a client gets from tensor.to(torch.bfloat16), as uint16 bits."""
    return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).copy()


# ---- the cast --------------------------------------------------------------------------------


def test_cast_matches_torch_and_owns_its_buffer() -> None:
    values = np.random.default_rng(0).standard_normal((32, 48)).astype(np.float32)
    bits = to_bfloat16_bits(values)
    assert bits.dtype == np.uint16 and bits.shape == values.shape
    assert bits.flags["OWNDATA"] and bits.flags["C_CONTIGUOUS"] and bits.base is None
    assert np.array_equal(bits, torch_bits(values))
    # bfloat16 keeps float32's exponent and 8 significant bits: relative error <= 2^-8
    back = bfloat16_bits_to_float32(bits)
    assert np.all(np.abs(back - values) <= np.abs(values) * 2.0**-8)


def test_cast_rounds_to_nearest_even() -> None:
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0);
    # 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go up to 1 + 2^-6.
    values = np.array([[1.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -2.5]], dtype=np.float32)
    back = bfloat16_bits_to_float32(to_bfloat16_bits(values))
    assert back.tolist() == [[1.0, 1.0, 1.0 + 2.0**-6, -2.5]]


# ---- the renderer ----------------------------------------------------------------------------


def test_renderer_bfloat16_is_the_float32_output_cast_by_torch() -> None:
    f32 = Renderer(QWEN3, image_cache_max=2).process(source(0))
    bf16 = Renderer(QWEN3, image_cache_max=2, dtype="bfloat16").process(source(0))
    assert f32.mm_hash == bf16.mm_hash  # the hash is over the decoded image, not the pixels
    a, b = f32.item.pixel_values, bf16.item.pixel_values
    assert a is not None and b is not None
    assert a.dtype == np.float32 and b.dtype == np.uint16
    assert a.shape == b.shape == LAYOUT.pixel_shape
    assert b.nbytes * 2 == a.nbytes == LAYOUT.pixel_bytes(4)
    assert b.nbytes == LAYOUT.pixel_bytes(2)
    assert np.array_equal(b, torch_bits(a))
    assert b.flags["OWNDATA"]
    # the checksum is over the bytes that ship: the bfloat16 bits
    assert bf16.item.checksum == pixel_checksum(b) != f32.item.checksum
    np.testing.assert_array_equal(f32.item.image_grid_thw, bf16.item.image_grid_thw)


def test_renderer_cache_keeps_the_bfloat16_item() -> None:
    renderer = Renderer(QWEN3, image_cache_max=2, dtype="bfloat16")
    first = renderer.process(source(1))
    again = renderer.process(source(1))
    assert again.cache_hit and again.item is first.item


def test_pool_renders_in_its_dtype() -> None:
    pool = RendererPool(QWEN3, pool_size=3, image_cache_max=2, dtype="bfloat16")
    assert [r.dtype for r in pool.renderers] == ["bfloat16"] * 3
    assert RendererPool(QWEN3).renderers[0].dtype == "float32"


def test_renderer_refuses_an_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="unknown pixel dtype 'float16'"):
        Renderer(QWEN3, dtype="float16")


# ---- the wire and the engine -----------------------------------------------------------------


def _sidecar(dtype: str, n: int = 3) -> MultiModalData:
    renderer = Renderer(QWEN3, image_cache_max=0, dtype=dtype)
    rendered = [renderer.process(source(i)) for i in range(n)]
    placeholders = [Placeholder(8 + i * (LAYOUT.tokens + 8), LAYOUT.tokens) for i in range(n)]
    return MultiModalData([r.mm_hash for r in rendered], placeholders, [r.item for r in rendered])


def _tokens(n: int = 3) -> list[int]:
    return list(range(8 + n * (LAYOUT.tokens + 8)))


@pytest.mark.parametrize("codec", ["fast", "stdlib"])
def test_build_body_ships_bfloat16_bits(codec: str) -> None:
    sidecar = _sidecar("bfloat16")
    mask = [True, False, True]
    body = build_body(get_codec(codec), "qwen3-vl", _tokens(), sidecar, mask, 16, "bfloat16")
    kwargs = json.loads(body)["features"]["kwargs_data"]["image"]
    assert kwargs[1] is None
    for i in (0, 2):
        decoded = decode_item(base64.b64decode(kwargs[i]))
        assert decoded.pixel_dtype == "bfloat16"
        assert decoded.pixel_values.dtype == np.uint16
        sent = sidecar.items[i].pixel_values
        assert sent is not None and np.array_equal(decoded.pixel_values, sent)
        assert decoded.checksum == sidecar.items[i].checksum
        assert len(kwargs[i]) + 2 == item_wire_bytes(LAYOUT.pixel_shape, 2, "bfloat16")


def test_bfloat16_body_is_about_half_of_float32() -> None:
    codec = get_codec("fast")
    full = [True, True, True]
    f32 = build_body(codec, "qwen3-vl", _tokens(), _sidecar("float32"), full, 16)
    bf16 = build_body(codec, "qwen3-vl", _tokens(), _sidecar("bfloat16"), full, 16, "bfloat16")
    assert 0.49 < len(bf16) / len(f32) < 0.52


def test_build_body_refuses_pixels_of_another_dtype() -> None:
    codec = get_codec("fast")
    with pytest.raises(ValueError, match="uint16 bits"):
        build_body(codec, "qwen3-vl", _tokens(), _sidecar("float32"), [True] * 3, 16, "bfloat16")
    with pytest.raises(ValueError, match="cannot ship as 'float32'"):
        build_body(codec, "qwen3-vl", _tokens(), _sidecar("bfloat16"), [True] * 3, 16, "float32")


def test_engine_checksums_the_bfloat16_bytes_it_decoded() -> None:
    sidecar = _sidecar("bfloat16")
    body = build_body(get_codec("fast"), "qwen3-vl", _tokens(), sidecar, [True] * 3, 16, "bfloat16")
    with TestClient(create_app(EngineConfig()), raise_server_exceptions=False) as engine:
        reply = engine.post(GENERATE_PATH, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["item_checksums"] == [it.checksum for it in sidecar.items]
        # the engine cache charges the bfloat16 bytes: half of float32's
        stats = engine.get("/stats").json()
        assert stats["cache_bytes"] == 3 * (LAYOUT.pixel_bytes(2) + 24)


# ---- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "ephemeral", "hash-only", "ephemeral+hash-only"])
def test_model_counts_two_bytes_a_pixel(mode: str) -> None:
    kw = {"mode": mode, "rollouts": 4, "turns": 6, "image_size": "512"}
    f32 = predict(PointConfig(**kw), 300_000.0)  # type: ignore[arg-type]
    bf16 = predict(PointConfig(dtype="bfloat16", **kw), 300_000.0)  # type: ignore[arg-type]
    assert bf16.pixel_bytes_per_image * 2 == f32.pixel_bytes_per_image == 6_291_456
    assert bf16.pixel_bytes * 2 == f32.pixel_bytes
    assert bf16.renderer_cache_only_bytes * 2 == f32.renderer_cache_only_bytes
    assert bf16.source_bytes == f32.source_bytes and bf16.descriptor_bytes == f32.descriptor_bytes
    assert 0.49 < bf16.bytes_shipped / f32.bytes_shipped < 0.51
    assert bf16.peak_bytes < f32.peak_bytes
    assert bf16.engine_cache_bytes < f32.engine_cache_bytes
