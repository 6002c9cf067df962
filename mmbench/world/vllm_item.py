"""vLLM's item format (`--codec vllm`): a Qwen-VL MultiModalKwargsItem as vLLM's own client-side
serializer writes it, byte for byte, without depending on vLLM (its wheels are GPU builds).

The real client (renderers 0.1.12 against vLLM 0.20's /inference/v1/generate) concatenates the
full items' `pixel_values` and `image_grid_thw` with torch, runs the Qwen2-VL field factory
(`pixel_values`: a "flat" field sliced by `image_grid_thw.prod(-1)`; `image_grid_thw`: "batched",
kept on CPU), splits the batch into one MultiModalKwargsItem per image, and serializes each with
`encode_mm_kwargs_item`: vLLM's `MsgpackEncoder(size_threshold=2**62)`, so that every tensor is
inline, then `pybase64.b64encode`. Read from vLLM 0.20.0 (vllm/v1/serial_utils.py,
vllm/entrypoints/serve/disagg/mm_serde.py, vllm/multimodal/inputs.py), one item is the msgpack map

    {"pixel_values":   {"data": ["float32", [rows, 1536], Ext(3, <pixel bytes>)],
                        "field": ["flat", {"keep_on_cpu": false, "slices": S, "dim": 0}]},
     "image_grid_thw": {"data": ["int64", [3], Ext(3, <24 bytes>)],
                        "field": ["batched", {"keep_on_cpu": true}]}}

where ext type 3 is vLLM's CUSTOM_TYPE_RAW_VIEW (a tensor's raw bytes), dtype strings are torch's
without the "torch." prefix ("float32", "bfloat16", "int64"), and S, the flat field's slices, is
the same in every item of a request: one `[[start, stop, null]]` per full item of the whole batch
(the field object is shared by the batch's elements), so an item's size grows with the number of
full items it ships beside. The grid is one row of the (n, 3) batch: shape [3].

One thing the real client does not fix: vLLM collects a modality's keys in a set, so whether
`pixel_values` or `image_grid_thw` comes first varies from process to process (string hashing is
randomized). mmbench writes them in the field factory's order; the engine accepts either. The size
is the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

if TYPE_CHECKING:
    import torch

RAW_VIEW = 3  # vLLM's CUSTOM_TYPE_RAW_VIEW: a tensor's bytes inline
PIXELS, GRID = "pixel_values", "image_grid_thw"
GRID_KEYS = (GRID, "grid_thws")  # Qwen-VL's key; Kimi K2.5's (its pixel_values are (patches, C, P, P))
FLAT_FIELD = ("flat", ("keep_on_cpu", "slices", "dim"))  # factory name, its dataclass fields in order
BATCHED_FIELD = ("batched", ("keep_on_cpu",))
_NUMPY = {"float32": np.float32, "bfloat16": np.uint16, "int64": np.int64}  # bfloat16 as its bits


class VllmItemError(ValueError):
    """An item that is not vLLM's MultiModalKwargsItem layout (the engine answers 400 with it)."""


# ---- the client side ---------------------------------------------------------------------------


def _tensor_data(t: torch.Tensor) -> memoryview:
    """vLLM's `tensor_data`: the tensor's bytes as a flat uint8 view (no copy when contiguous)."""
    import torch

    return t.flatten().cpu().contiguous().view(torch.uint8).numpy().data


def _enc_hook(obj: Any) -> Any:
    """What vLLM's MsgpackEncoder.enc_hook does for the two types an item holds: a CPU tensor below
    the size threshold (2**62: all of them) becomes [dtype, shape, Ext(3, bytes)], a slice
    [start, stop, step] of ints."""
    import torch

    if isinstance(obj, torch.Tensor):
        data = msgspec.msgpack.Ext(RAW_VIEW, _tensor_data(obj))
        return str(obj.dtype).removeprefix("torch."), obj.shape, data
    if isinstance(obj, slice):
        return tuple(int(v) if v is not None else None for v in (obj.start, obj.stop, obj.step))
    raise TypeError(f"Object of type {type(obj)} is not serializable")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_items(
    pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, grid_key: str = GRID
) -> Iterator[bytes]:
    """Each image's serialized item, from the concatenated pixels (rows, dim) and grids (n, 3), one
    at a time as the real client's list comprehension makes them (so at most one item's msgpack
    bytes exist at once beside its base64 text)."""
    sizes = [int(v) for v in image_grid_thw.prod(-1)]
    if sum(sizes) != pixel_values.shape[0]:
        raise ValueError(f"grids cover {sum(sizes)} pixel rows, the batch has {pixel_values.shape[0]}")
    bounds = [0, *np.cumsum(sizes).tolist()]
    # flat_from_sizes(dim=0): one (slice(start, stop),) per item, shared by every item of the batch
    slices = [(slice(bounds[i], bounds[i + 1]),) for i in range(len(sizes))]
    flat = (FLAT_FIELD[0], {"keep_on_cpu": False, "slices": slices, "dim": 0})
    batched = (BATCHED_FIELD[0], {"keep_on_cpu": True})
    for i in range(len(sizes)):
        item = {
            PIXELS: {"data": pixel_values[bounds[i] : bounds[i + 1]], "field": flat},
            grid_key: {"data": image_grid_thw[i], "field": batched},
        }
        yield _ENCODER.encode(item)


# ---- its size, by hand ------------------------------------------------------------------------
# msgpack's smallest encodings, as msgspec writes them: fixstr/str8, fixarray/array16,
# fixmap, positive fixint/uint8/16/32/64, ext8/16/32 (fixext for 1, 2, 4, 8 and 16 bytes).


def _str(text: str) -> int:
    n = len(text.encode())
    return n + (1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5)


def _container(n: int) -> int:  # array or map header
    return 1 if n < 16 else 3 if n < 65536 else 5


def _uint(v: int) -> int:
    return 1 if v < 128 else 2 if v < 256 else 3 if v < 65536 else 5 if v < 2**32 else 9


def _ext(n: int) -> int:
    if n in (1, 2, 4, 8, 16):
        return 2 + n
    return n + (3 if n < 256 else 4 if n < 65536 else 6)


def _tensor(dtype: str, shape: tuple[int, ...], itemsize: int) -> int:
    return (
        _container(3)
        + _str(dtype)
        + _container(len(shape))
        + sum(map(_uint, shape))
        + _ext(math.prod(shape) * itemsize)
    )


def _elem(data: int, name: str, kwargs: int, nkw: int) -> int:
    field = _container(2) + _str(name) + _container(nkw) + kwargs
    return _container(2) + _str("data") + data + _str("field") + field


def item_bytes(
    pixel_shape: tuple[int, ...], itemsize: int, dtype_name: str, items: int, grid_key: str = GRID
) -> int:
    """Bytes of one serialized item (before base64) in a request whose `items` full items all have
    `pixel_shape` (the flat field's slices list every one of them)."""
    rows = pixel_shape[0]
    slices = _container(items) + sum(
        _container(1) + _container(3) + _uint(k * rows) + _uint((k + 1) * rows) + 1 for k in range(items)
    )
    flat_kw = _str("keep_on_cpu") + 1 + _str("slices") + slices + _str("dim") + _uint(0)
    batched_kw = _str("keep_on_cpu") + 1
    return (
        _container(2)
        + _str(PIXELS)
        + _elem(_tensor(dtype_name, pixel_shape, itemsize), FLAT_FIELD[0], flat_kw, 3)
        + _str(grid_key)
        + _elem(_tensor("int64", (3,), 8), BATCHED_FIELD[0], batched_kw, 1)
    )


# ---- the engine side --------------------------------------------------------------------------


def _ext_hook(code: int, data: memoryview) -> memoryview:
    if code != RAW_VIEW:
        raise VllmItemError(f"unsupported msgpack extension type {code} (only {RAW_VIEW}, a raw tensor view)")
    return data  # a view into the item's bytes: no copy


_DECODER = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


@dataclass(frozen=True, slots=True)
class VllmItem:
    pixel_values: np.ndarray  # a view into the item's bytes (bfloat16 as uint16 bits)
    pixel_dtype: str
    pixel_bytes: memoryview
    image_grid_thw: np.ndarray  # (1, 3) int64, as mmbench's own items hold it


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor_of(key: str, data: object) -> tuple[str, np.ndarray, memoryview]:
    if not (isinstance(data, list) and len(data) == 3):
        raise VllmItemError(f"{key}.data must be [dtype, shape, raw bytes]")
    dtype_name, shape, raw = data
    if not isinstance(dtype_name, str) or dtype_name not in _NUMPY:
        raise VllmItemError(f"{key} has unsupported dtype {str(dtype_name)[:40]!r}")
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise VllmItemError(f"{key} has a bad shape {str(shape)[:80]}")
    if not isinstance(raw, memoryview):
        raise VllmItemError(f"{key}.data must carry its bytes inline (msgpack ext type {RAW_VIEW})")
    dtype = np.dtype(_NUMPY[dtype_name])
    size = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
    if size != raw.nbytes:
        raise VllmItemError(
            f"{key} of shape {shape} and dtype {dtype_name} needs {size} bytes, carries {raw.nbytes}"
        )
    return dtype_name, np.frombuffer(raw, dtype=dtype).reshape(shape), raw


def _field_of(key: str, field: object, want: tuple[str, tuple[str, ...]]) -> dict[str, Any]:
    name, kw_names = want
    if not (isinstance(field, list) and len(field) == 2 and field[0] == name and isinstance(field[1], dict)):
        raise VllmItemError(f"{key}.field must be [{name!r}, {{...}}]")
    kwargs: dict[str, Any] = field[1]
    if sorted(kwargs) != sorted(kw_names):
        raise VllmItemError(f"{key}.field {name} takes {list(kw_names)}, got {sorted(map(str, kwargs))[:8]}")
    if not isinstance(kwargs["keep_on_cpu"], bool):
        raise VllmItemError(f"{key}.field keep_on_cpu must be a bool")
    return kwargs


def _check_slices(slices: object, dim: object) -> None:
    if not (_is_int(dim) and dim == 0):
        raise VllmItemError("pixel_values.field dim must be 0")
    ok = isinstance(slices, list) and all(
        isinstance(s, list) and len(s) == 1 and isinstance(s[0], list) and len(s[0]) == 3
        and all(v is None or _is_int(v) for v in s[0])
        for s in slices
    )  # fmt: skip
    if not ok:
        raise VllmItemError("pixel_values.field slices must be a list of [[start, stop, step]]")


def decode(raw: bytes | bytearray | memoryview) -> VllmItem:
    """Decode and check one item; raise VllmItemError naming the first problem."""
    try:
        obj = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise VllmItemError(f"item is not valid msgpack: {exc}") from None
    gk = next((k for k in GRID_KEYS if isinstance(obj, dict) and k in obj), GRID)
    if not isinstance(obj, dict) or sorted(obj) != sorted((PIXELS, gk)):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise VllmItemError(f"item must be a map of {PIXELS} and {GRID} (Kimi: grid_thws), got {keys}")
    elems = {}
    for key in (PIXELS, gk):
        elem = obj[key]
        if not (isinstance(elem, dict) and sorted(elem) == ["data", "field"]):
            raise VllmItemError(f"{key} must be a map of data and field")
        elems[key] = elem
    flat = _field_of(PIXELS, elems[PIXELS]["field"], FLAT_FIELD)
    _check_slices(flat["slices"], flat["dim"])
    _field_of(gk, elems[gk]["field"], BATCHED_FIELD)
    dtype_name, pixels, pixel_bytes = _tensor_of(PIXELS, elems[PIXELS]["data"])
    grid_dtype, grid, _ = _tensor_of(gk, elems[gk]["data"])
    if grid_dtype != "int64" or grid.shape != (3,):
        raise VllmItemError(f"{gk} must be int64 of shape [3], got {grid_dtype} {list(grid.shape)}")
    if (grid <= 0).any():
        raise VllmItemError(f"{gk} must be positive, got {grid.tolist()}")
    if pixels.ndim not in (2, 4):  # Kimi's are (patches, C, P, P)
        raise VllmItemError(f"{PIXELS} must be 2-D or 4-D, got shape {list(pixels.shape)}")
    return VllmItem(pixels, dtype_name, pixel_bytes, grid.reshape(1, 3))
