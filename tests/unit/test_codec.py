"""mmbench.world.codec: the item wire format, its checksums and the two text codecs."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmbench.errors import MmbenchError
from mmbench.world.codec import (
    CODECS,
    MAGIC,
    CodecError,
    decode_item,
    encode_item,
    get_codec,
    item_header,
    item_wire_bytes,
    pixel_checksum,
)

GRID = np.array([[1, 4, 6]], dtype=np.int64)


def pixels(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


def raw_item(spec: object, body: bytes = b"") -> bytes:
    """An item with a hand-written header (any JSON) and body."""
    head = json.dumps({"tensors": spec}).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + body


# ---- encode/decode round trip -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(24, 1176), (16, 1536), (1, 3), (5, 1)])
def test_round_trip(shape: tuple[int, int]) -> None:
    original = pixels(*shape, seed=shape[0])
    raw = encode_item(original, "float32", GRID)
    assert raw.startswith(MAGIC)
    decoded = decode_item(raw)
    assert decoded.pixel_dtype == "float32"
    assert decoded.pixel_values.dtype == np.float32
    assert decoded.pixel_values.shape == shape
    assert np.array_equal(decoded.pixel_values, original)
    assert decoded.image_grid_thw.dtype == np.int64
    assert np.array_equal(decoded.image_grid_thw, GRID)
    assert decoded.checksum == pixel_checksum(original)
    assert decoded.checksum == pixel_checksum(decoded.pixel_values)
    assert decoded.nbytes == original.nbytes + GRID.nbytes


def test_round_trip_non_contiguous_input() -> None:
    original = pixels(12, 8).T  # a Fortran-ordered view
    assert not original.flags.c_contiguous
    decoded = decode_item(encode_item(original, "float32", GRID))
    assert np.array_equal(decoded.pixel_values, original)
    assert decoded.checksum == pixel_checksum(original)


def test_round_trip_bfloat16_bits() -> None:
    bits = np.arange(6 * 4, dtype=np.uint16).reshape(6, 4)
    decoded = decode_item(encode_item(bits, "bfloat16", GRID))
    assert decoded.pixel_dtype == "bfloat16"
    assert decoded.pixel_values.dtype == np.uint16
    assert np.array_equal(decoded.pixel_values, bits)
    assert decoded.checksum == pixel_checksum(bits)


def test_grid_of_other_int_dtype_is_stored_as_int64() -> None:
    decoded = decode_item(encode_item(pixels(2, 3), "float32", GRID.astype(np.int32)))
    assert decoded.image_grid_thw.dtype == np.int64
    assert np.array_equal(decoded.image_grid_thw, GRID)


def test_pixel_checksum_is_crc32_of_c_order_bytes() -> None:
    arr = pixels(5, 7)
    assert pixel_checksum(arr) == zlib.crc32(arr.tobytes())
    assert pixel_checksum(arr.T) == zlib.crc32(arr.T.tobytes())
    changed = arr.copy()
    changed[2, 3] += 1.0
    assert pixel_checksum(changed) != pixel_checksum(arr)


def test_pixel_checksum_of_empty_array() -> None:
    assert pixel_checksum(np.zeros((0, 1176), dtype=np.float32)) == zlib.crc32(b"")


@settings(max_examples=60, deadline=None)
@given(
    original=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
    grid=hnp.arrays(np.int64, (1, 3), elements=st.integers(1, 2**63 - 1)),
)
def test_round_trip_property(original: np.ndarray, grid: np.ndarray) -> None:
    decoded = decode_item(encode_item(original, "float32", grid))
    assert decoded.pixel_values.shape == original.shape
    assert decoded.pixel_values.tobytes() == original.tobytes()  # bitwise, NaNs included
    assert np.array_equal(decoded.image_grid_thw, grid)
    assert decoded.checksum == pixel_checksum(original)


# ---- text codecs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CODECS))
def test_b64_round_trip(name: str) -> None:
    codec = get_codec(name)
    assert codec.name == name
    raw = encode_item(pixels(9, 13), "float32", GRID)
    text = codec.b64encode(raw)
    assert text == base64.b64encode(raw)
    assert codec.b64decode(text) == raw
    assert codec.b64decode(text.decode("ascii")) == raw
    for tail in (b"", b"x", b"xy", b"xyz"):
        assert codec.b64decode(codec.b64encode(tail)) == tail


@pytest.mark.parametrize("name", sorted(CODECS))
def test_b64decode_rejects_non_alphabet(name: str) -> None:
    with pytest.raises(ValueError):
        get_codec(name).b64decode(b"QUJD!!==")


@pytest.mark.parametrize("name", sorted(CODECS))
def test_dumps_loads_round_trip(name: str) -> None:
    codec = get_codec(name)
    body = {
        "model": "m",
        "token_ids": [1, 2, 3],
        "features": {
            "mm_hashes": {"image": ["a" * 32]},
            "mm_placeholders": {"image": [{"offset": 5, "length": 64}]},
            "kwargs_data": {"image": [base64.b64encode(b"\x00\x01").decode(), None]},
        },
        "sampling_params": {"temperature": 0.5, "max_tokens": 8},
        "text": "é ✓",
    }
    data = codec.dumps(body)
    assert isinstance(data, bytes)
    assert codec.loads(data) == body
    # Both codecs speak the same JSON.
    for other in CODECS.values():
        assert other.loads(data) == body


def test_unknown_codec_lists_valid_names() -> None:
    with pytest.raises(MmbenchError) as info:
        get_codec("msgpack")
    message = str(info.value)
    assert "'msgpack'" in message
    for name in CODECS:
        assert name in message


# ---- item_wire_bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1176), (24, 1176), (256, 1536), (7, 5), (0, 1536)])
def test_item_wire_bytes_matches_real_payload(shape: tuple[int, int]) -> None:
    raw = encode_item(np.zeros(shape, dtype=np.float32), "float32", GRID)
    text = base64.b64encode(raw).decode("ascii")
    assert item_wire_bytes(shape) == len(text) + 2
    assert item_wire_bytes(shape) == len(json.dumps(text))


def test_item_wire_bytes_bfloat16() -> None:
    shape = (24, 1176)
    raw = encode_item(np.zeros(shape, dtype=np.uint16), "bfloat16", GRID)
    assert item_wire_bytes(shape, itemsize=2, dtype_name="bfloat16") == len(base64.b64encode(raw)) + 2


# ---- decode errors ------------------------------------------------------------------------


def good_item() -> bytes:
    return encode_item(pixels(3, 4), "float32", GRID)


def test_decode_wrong_magic() -> None:
    with pytest.raises(CodecError, match="MMB1"):
        decode_item(b"MMB2" + good_item()[4:])


@pytest.mark.parametrize("length", [0, 3, 7])
def test_decode_shorter_than_prefix(length: int) -> None:
    with pytest.raises(CodecError):
        decode_item(good_item()[:length])


@pytest.mark.parametrize("cut", [1, 8, 24, 25, 60])
def test_decode_truncated(cut: int) -> None:
    raw = good_item()
    with pytest.raises(CodecError):
        decode_item(raw[:-cut])


def test_decode_truncated_inside_tensor_names_it() -> None:
    with pytest.raises(CodecError, match="truncated inside tensor image_grid_thw"):
        decode_item(good_item()[:-1])
    with pytest.raises(CodecError, match="truncated inside tensor pixel_values"):
        decode_item(good_item()[: -(24 + 1)])


@pytest.mark.parametrize("extra", [b"\x00", b"tail", bytes(24)])
def test_decode_trailing_bytes(extra: bytes) -> None:
    with pytest.raises(CodecError, match=f"{len(extra)} trailing bytes"):
        decode_item(good_item() + extra)


@pytest.mark.parametrize(
    "head",
    [b"{not json", b"[1, 2]", b'{"other": []}', b'{"tensors": 5}', b'"tensors"', b"\xff\xfe"],
)
def test_decode_bad_header(head: bytes) -> None:
    raw = MAGIC + struct.pack("<I", len(head)) + head + bytes(72)
    with pytest.raises(CodecError, match="header"):
        decode_item(raw)


def test_decode_wrong_tensor_names() -> None:
    raw = raw_item([["pixels", "float32", [1, 1]], ["image_grid_thw", "int64", [1, 3]]], bytes(28))
    with pytest.raises(CodecError, match="pixels"):
        decode_item(raw)


@pytest.mark.parametrize("dtype_name", ["float64", "float16", "uint8", "bool"])
def test_decode_unsupported_dtype(dtype_name: str) -> None:
    header = item_header({"pixel_values": (dtype_name, (3, 4)), "image_grid_thw": ("int64", (1, 3))})
    raw = header + bytes(3 * 4 * 8) + GRID.tobytes()
    with pytest.raises(CodecError, match=repr(dtype_name)):
        decode_item(raw)


@pytest.mark.parametrize("shape", [[-1, 4], [3, "4"], [2.0, 4], "34", None])
def test_decode_bad_shape(shape: object) -> None:
    raw = raw_item([["pixel_values", "float32", shape], ["image_grid_thw", "int64", [1, 3]]], bytes(72))
    with pytest.raises(CodecError, match="bad shape"):
        decode_item(raw)


@pytest.mark.parametrize("grid", [np.array([1, 4, 6]), np.array([[1, 4, 6]] * 2), np.zeros((1, 4))])
def test_decode_grid_of_wrong_shape(grid: np.ndarray) -> None:
    raw = encode_item(pixels(3, 4), "float32", grid.astype(np.int64))
    with pytest.raises(CodecError, match="image_grid_thw must have shape"):
        decode_item(raw)


# Malformed headers that decode_item lets escape as something other than CodecError (which the
# engine turns into a 400). Each is a bug in mmbench/world/codec.py; see the reason.
@pytest.mark.parametrize(
    "raw",
    [
        # entries with too few fields: 'not enough values to unpack' ValueError
        raw_item([["pixel_values"], ["image_grid_thw"]]),
        # an unhashable dtype: 'unhashable type: list' TypeError
        raw_item([["pixel_values", ["float32"], [1]], ["image_grid_thw", "int64", [1, 3]]]),
        # a shape whose product overflows int64 (np.prod wraps to 0): reshape ValueError
        raw_item(
            [["pixel_values", "float32", [2**32, 2**32]], ["image_grid_thw", "int64", [1, 3]]],
            bytes(24),
        ),
        # a JSON boolean in a shape passes the isinstance(int) check: reshape TypeError
        raw_item([["pixel_values", "float32", [True, 2]], ["image_grid_thw", "int64", [1, 3]]], bytes(32)),
    ],
    ids=["short-entries", "unhashable-dtype", "shape-overflow", "bool-shape"],
)
def test_decode_malformed_header_raises_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_item(raw)


def test_decode_rejects_non_int64_grid() -> None:
    raw = raw_item(
        [["pixel_values", "float32", [1, 2]], ["image_grid_thw", "float32", [1, 3]]], bytes(8 + 12)
    )
    with pytest.raises(CodecError):
        decode_item(raw)
