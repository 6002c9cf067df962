"""The wire codec: one processor item <-> bytes <-> base64 text inside the JSON body.

An item is serialized as the real client does it in spirit: tensor bytes with a small
shape/dtype header. Layout: b"MMB1", a little-endian uint32 header length, a JSON header
{"tensors": [[name, dtype, shape], ...]}, then each tensor's raw C-order bytes in that order.

Two codecs do the text layers of that item. `stdlib` (json + base64) is what the real client uses through
httpx `json=`; `fast` (orjson + pybase64) is 3-10x faster on bodies of this size. The codec
changes wall time and how many copies of a body exist at once, so it is a recorded option.

The third, `vllm`, is the real client's whole wire: each item in vLLM's own msgpack layout
(mmbench.world.vllm_item), `pybase64`, and the body through the openai SDK's `json.dumps` (compact
separators, ensure_ascii off). `decode_item` reads either item format, told apart by the first byte
(b"MMB1", or a msgpack map).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64

from mmbench.errors import MmbenchError
from mmbench.world import vllm_item

MAGIC = b"MMB1"
_LEN = struct.Struct("<I")
TENSOR_ORDER = ("pixel_values", "image_grid_thw")
_DTYPES = {"float32": np.float32, "int64": np.int64, "bfloat16": np.uint16}


class CodecError(ValueError):
    """A payload that cannot be decoded (the engine answers 400 with this text)."""


def item_header(shapes: dict[str, tuple[str, tuple[int, ...]]]) -> bytes:
    """The header bytes for tensors of these (dtype, shape), in TENSOR_ORDER."""
    spec = [[name, shapes[name][0], list(shapes[name][1])] for name in TENSOR_ORDER]
    head = json.dumps({"tensors": spec}, separators=(",", ":")).encode()
    return MAGIC + _LEN.pack(len(head)) + head


def encode_item(pixel_values: np.ndarray, dtype_name: str, grid: np.ndarray) -> bytes:
    """Serialize one item. `pixel_values` is the raw array (bfloat16 passed as its uint16 bits)."""
    header = item_header(
        {
            "pixel_values": (dtype_name, tuple(pixel_values.shape)),
            "image_grid_thw": ("int64", tuple(grid.shape)),
        }
    )
    return b"".join((header, pixel_values.tobytes(), grid.astype(np.int64, copy=False).tobytes()))


@dataclass(frozen=True, slots=True)
class DecodedItem:
    pixel_values: np.ndarray  # a view into the decoded buffer (bfloat16 as uint16 bits)
    pixel_dtype: str
    image_grid_thw: np.ndarray
    checksum: int

    @property
    def nbytes(self) -> int:
        return int(self.pixel_values.nbytes + self.image_grid_thw.nbytes)


try:  # ISA-L's crc32 (carry-less multiplication): the same checksum, 3-10x faster than zlib's here
    from isal.isal_zlib import crc32 as fast_crc32
except ImportError:  # pragma: no cover - a platform without its wheels
    fast_crc32 = zlib.crc32


def pixel_checksum(pixels: np.ndarray) -> int:
    """crc32 of the pixel bytes: what the client and the engine compare per item. It is mmbench's
    own check, not work the real client does, so it takes the fast implementation too."""
    flat = np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
    return int(fast_crc32(flat.data))  # the buffer itself: no copy


def decode_item(raw: bytes) -> DecodedItem:
    """Either item format: mmbench's MMB1 (fast, stdlib), or vLLM's msgpack map (vllm)."""
    if len(raw) and (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)):  # a msgpack map
        try:
            item = vllm_item.decode(raw)
        except vllm_item.VllmItemError as exc:
            raise CodecError(str(exc)) from None
        checksum = fast_crc32(item.pixel_bytes)
        return DecodedItem(item.pixel_values, item.pixel_dtype, item.image_grid_thw, checksum)
    return _decode_mmb1(raw)


def _decode_mmb1(raw: bytes) -> DecodedItem:
    if len(raw) < 8 or raw[:4] != MAGIC:
        raise CodecError("item does not start with the MMB1 header (nor with a msgpack map: vLLM's layout)")
    (hlen,) = _LEN.unpack_from(raw, 4)
    try:
        spec = json.loads(raw[8 : 8 + hlen])["tensors"]
    except (ValueError, KeyError, TypeError):
        raise CodecError("item header is not valid JSON with a tensors list") from None
    if not (
        isinstance(spec, list)
        and all(isinstance(s, list) and len(s) == 3 and isinstance(s[0], str) for s in spec)
    ):
        raise CodecError("item header tensors must be [name, dtype, shape] triples")
    names = [s[0] for s in spec]
    if names != list(TENSOR_ORDER):
        raise CodecError(f"item tensors must be {list(TENSOR_ORDER)}, got {names}")
    view = memoryview(raw)
    pos = 8 + hlen
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, dtype_name, shape in spec:
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise CodecError(f"tensor {name} has unsupported dtype {dtype_name!r}")
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise CodecError(f"tensor {name} has a bad shape {shape!r}")
        dtype = np.dtype(_DTYPES[dtype_name])
        size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
        if pos + size > len(raw):
            raise CodecError(f"item is truncated inside tensor {name}")
        arrays[name] = np.frombuffer(view[pos : pos + size], dtype=dtype).reshape(shape)
        dtypes[name] = dtype_name
        pos += size
    if pos != len(raw):
        raise CodecError(f"item has {len(raw) - pos} trailing bytes")
    if dtypes["image_grid_thw"] != "int64":
        raise CodecError(f"image_grid_thw must be int64, got {dtypes['image_grid_thw']}")
    grid = arrays["image_grid_thw"]
    if grid.shape != (1, 3):
        raise CodecError(f"image_grid_thw must have shape (1, 3), got {grid.shape}")
    if (grid <= 0).any():
        raise CodecError(f"image_grid_thw must be positive, got {grid.tolist()}")
    pixels = arrays["pixel_values"]
    if pixels.ndim not in (2, 4):  # (rows, C*T*P*P) for Qwen-VL, (patches, C, P, P) for Kimi
        raise CodecError(f"pixel_values must be 2-D or 4-D, got shape {list(pixels.shape)}")
    return DecodedItem(
        pixels, dtypes["pixel_values"], grid, fast_crc32(view[8 + hlen : 8 + hlen + pixels.nbytes])
    )


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    b64encode: Callable[[bytes], bytes]
    b64decode: Callable[[str | bytes], bytes]
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    # json.dumps's default separators put ", " between elements and ": " after keys (the model counts them)
    spaced: bool = False
    item_format: str = "mmb1"  # "mmb1" (mmbench's own) or "vllm" (vLLM's msgpack MultiModalKwargsItem)


def _std_b64decode(text: str | bytes) -> bytes:
    return base64.b64decode(text, validate=True)


def _fast_b64decode(text: str | bytes) -> bytes:
    return pybase64.b64decode(text, validate=True)


def _std_dumps(obj: Any) -> bytes:
    # What httpx does with json=: json.dumps, then UTF-8 encode (two copies of the body).
    return json.dumps(obj).encode("utf-8")


def _openai_dumps(obj: Any) -> bytes:
    # The openai SDK's body serializer (openai._utils._json.openapi_dumps): the standard library with
    # httpx's own settings (a custom encoder class that only adds datetime and pydantic types).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


CODECS: dict[str, Codec] = {
    "stdlib": Codec("stdlib", base64.b64encode, _std_b64decode, _std_dumps, json.loads, spaced=True),
    "fast": Codec("fast", pybase64.b64encode, _fast_b64decode, orjson.dumps, orjson.loads),
    # the real client: vLLM's item layout, pybase64 (encode_mm_kwargs_item), the openai SDK's json.dumps,
    # and the SDK reads answers with httpx's json.loads
    "vllm": Codec("vllm", pybase64.b64encode, _fast_b64decode, _openai_dumps, json.loads, item_format="vllm"),
}
DEFAULT_CODEC = "fast"


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise MmbenchError(f"unknown codec {name!r}; choose one of: {', '.join(sorted(CODECS))}") from None


def b64_len(n: int) -> int:
    return 4 * ((n + 2) // 3)


@functools.lru_cache(maxsize=1024)  # the model asks for the same few sizes for every simulated request
def item_wire_bytes(
    pixel_shape: tuple[int, ...], itemsize: int = 4, dtype_name: str = "float32", codec: str = "fast",
    full_items: int = 1, grid_key: str = vllm_item.GRID,
) -> int:  # fmt: skip
    """Bytes one full item adds to the JSON body: its quoted base64 text (no escaping needed). In
    vLLM's layout an item also lists the slices of every full item of its request (`full_items`)."""
    if get_codec(codec).item_format == "vllm":
        raw = vllm_item.item_bytes(pixel_shape, itemsize, dtype_name, full_items, grid_key)
    else:
        header = item_header({"pixel_values": (dtype_name, pixel_shape), "image_grid_thw": ("int64", (1, 3))})
        raw = len(header) + math.prod(pixel_shape) * itemsize + 3 * 8
    return b64_len(raw) + 2
