"""--codec vllm: vLLM's MultiModalKwargsItem layout, byte for byte, and its checks on the engine side.

The layout below is written out by hand from vLLM 0.20.0's vllm/v1/serial_utils.py (MsgpackEncoder
with size_threshold=2**62, _encode_mm_item, _encode_mm_field_elem, _encode_mm_field, _encode_tensor)
and vllm/multimodal/inputs.py (MultiModalFlatField: keep_on_cpu, slices, dim; MultiModalBatchedField:
keep_on_cpu). The same bytes came out of vLLM 0.20.0's own encoder for these inputs (checked once by
hand against the wheel's code; vLLM itself is not a dependency).
"""

from __future__ import annotations

import base64
import json

import msgspec
import numpy as np
import pytest
import torch

from mmbench.world import vllm_item
from mmbench.world.client import build_body
from mmbench.world.codec import CodecError, decode_item, get_codec, item_wire_bytes, pixel_checksum
from mmbench.world.geometry import MODELS
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder


def s(text: str) -> bytes:
    """A msgpack fixstr."""
    return bytes([0xA0 | len(text)]) + text.encode()


def first_of_two_items() -> bytes:
    """Item 0 of a batch of two: 4 rows of 6 float32 (grid [1, 2, 2]), then 8 rows (grid [1, 2, 4])."""
    pixels = np.arange(24, dtype=np.float32).tobytes()
    grid = np.array([1, 2, 2], dtype=np.int64).tobytes()
    return b"".join([
        b"\x82",  # the item: a map of 2
        s("pixel_values"), b"\x82",  # an element: a map of data and field
        s("data"), b"\x93", s("float32"), b"\x92\x04\x06",  # [dtype, [4, 6], ...
        b"\xc7\x60\x03", pixels,  # ... ext 8 (96 bytes) of type 3, the raw view]
        s("field"), b"\x92", s("flat"), b"\x83",  # ["flat", {3 factory kwargs}]
        s("keep_on_cpu"), b"\xc2",  # false
        s("slices"), b"\x92",  # two slices: every item of the batch
        b"\x91\x93\x00\x04\xc0",  # [[0, 4, null]]
        b"\x91\x93\x04\x0c\xc0",  # [[4, 12, null]]
        s("dim"), b"\x00",
        s("image_grid_thw"), b"\x82",
        s("data"), b"\x93", s("int64"), b"\x91\x03",  # ["int64", [3], ...
        b"\xc7\x18\x03", grid,  # ... ext 8 (24 bytes) of type 3]
        s("field"), b"\x92", s("batched"), b"\x81", s("keep_on_cpu"), b"\xc3",  # ["batched", {true}]
    ])  # fmt: skip


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.cat([torch.arange(24, dtype=torch.float32).reshape(4, 6), torch.ones(8, 6)])
    grids = torch.tensor([[1, 2, 2], [1, 2, 4]])
    return pixels, grids


def test_item_bytes_are_vllms_layout_exactly() -> None:
    items = list(vllm_item.encode_items(*batch()))
    assert len(items) == 2
    assert items[0] == first_of_two_items()
    # the second item: its own rows and grid, the same two slices
    assert b"\x92\x91\x93\x00\x04\xc0\x91\x93\x04\x0c\xc0" in items[1]
    assert np.array([1, 2, 4], dtype=np.int64).tobytes() in items[1]


def test_bfloat16_ships_its_two_byte_bits_under_torchs_name() -> None:
    pixels = torch.arange(24, dtype=torch.float32).reshape(4, 6).to(torch.bfloat16)
    (raw,) = vllm_item.encode_items(pixels, torch.tensor([[1, 2, 2]]))
    assert s("bfloat16") + b"\x92\x04\x06\xc7\x30\x03" + pixels.view(torch.int16).numpy().tobytes() in raw
    decoded = decode_item(raw)
    assert decoded.pixel_dtype == "bfloat16"
    assert decoded.pixel_values.dtype == np.uint16


@pytest.mark.parametrize("items", [1, 2, 5, 16, 17])
@pytest.mark.parametrize(("rows", "dim", "itemsize", "dtype"), [
    (4, 6, 4, "float32"), (1024, 1536, 4, "float32"), (1296, 1176, 4, "float32"), (100, 1536, 2, "bfloat16"),
])  # fmt: skip
def test_size_by_hand_is_the_encoders(items: int, rows: int, dim: int, itemsize: int, dtype: str) -> None:
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    pixels = torch.zeros(rows * items, dim, dtype=torch_dtype)
    side = int(rows**0.5)
    grids = torch.tensor([[1, side, rows // side]] * items)
    sizes = {len(raw) for raw in vllm_item.encode_items(pixels, grids)}
    assert sizes == {vllm_item.item_bytes((rows, dim), itemsize, dtype, items)}
    assert item_wire_bytes((rows, dim), itemsize, dtype, "vllm", items) == 4 * ((sizes.pop() + 2) // 3) + 2


def test_decoded_item_is_a_view_with_the_clients_checksum() -> None:
    raw = first_of_two_items()
    decoded = decode_item(raw)
    want = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(decoded.pixel_values, want)
    assert decoded.image_grid_thw.tolist() == [[1, 2, 2]]
    assert decoded.checksum == pixel_checksum(want)
    assert not decoded.pixel_values.flags.owndata  # a view into the item's bytes: no copy


def test_keys_in_either_order_decode() -> None:
    """vLLM orders an item's keys by a set (per process): the engine takes both orders."""
    obj = msgspec.msgpack.decode(
        first_of_two_items(), ext_hook=lambda code, data: msgspec.msgpack.Ext(code, data)
    )
    flipped = msgspec.msgpack.encode(
        {"image_grid_thw": obj["image_grid_thw"], "pixel_values": obj["pixel_values"]}
    )
    assert flipped != first_of_two_items() and len(flipped) == len(first_of_two_items())
    assert decode_item(flipped).checksum == decode_item(first_of_two_items()).checksum


def _mutated(path: list[str | int], value: object) -> bytes:
    obj = msgspec.msgpack.decode(
        first_of_two_items(), ext_hook=lambda code, data: msgspec.msgpack.Ext(code, data)
    )
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return msgspec.msgpack.encode(obj)


EXT = msgspec.msgpack.Ext
BAD = [
    ("extra key", ["audio"], {}, "a map of pixel_values and image_grid_thw"),
    ("missing grid", ["image_grid_thw"], KeyError, "a map of pixel_values and image_grid_thw"),
    ("elem not a map", ["pixel_values"], [1, 2], "a map of data and field"),
    ("elem extra key", ["pixel_values", "modality"], "image", "a map of data and field"),
    ("pickle ext", ["pixel_values", "data", 2], EXT(1, b"x" * 96), "extension type 1"),
    ("short bytes", ["pixel_values", "data", 2], EXT(3, b"x" * 95), "needs 96 bytes, carries 95"),
    ("out of line", ["pixel_values", "data", 2], 1, "inline"),
    ("bad dtype", ["pixel_values", "data", 0], "float64", "unsupported dtype"),
    ("bad shape", ["pixel_values", "data", 1], [4, -6], "bad shape"),
    ("3-D pixels", ["pixel_values", "data", 1], [2, 2, 6], "2-D"),
    ("wrong field", ["pixel_values", "field", 0], "batched", "must be ['flat'"),
    ("field kwargs", ["pixel_values", "field", 1, "extra"], 1, "takes ['keep_on_cpu', 'slices', 'dim']"),
    ("keep_on_cpu", ["image_grid_thw", "field", 1, "keep_on_cpu"], 1, "must be a bool"),
    ("slices", ["pixel_values", "field", 1, "slices"], [[0, 4]], "slices must be"),
    ("dim", ["pixel_values", "field", 1, "dim"], 1, "dim must be 0"),
    (
        "grid dtype",
        ["image_grid_thw", "data"],
        ["float32", [6], EXT(3, b"x" * 24)],
        "must be int64 of shape [3]",
    ),
    ("grid shape", ["image_grid_thw", "data", 1], [1, 3], "must be int64 of shape [3]"),
]


@pytest.mark.parametrize(("path", "value", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_items_are_refused_by_name(path: list[str | int], value: object, needle: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_item(_mutated(path, value))
    assert needle in str(info.value)


def test_garbage_and_zero_grid_are_refused() -> None:
    with pytest.raises(CodecError, match="not valid msgpack"):
        decode_item(first_of_two_items()[:-3])
    zero = _mutated(["image_grid_thw", "data", 2], EXT(3, np.array([1, 0, 2], dtype=np.int64).tobytes()))
    with pytest.raises(CodecError, match="positive"):
        decode_item(zero)


def test_body_is_the_openai_sdks_compact_json_with_vllm_items() -> None:
    pixels = [np.arange(24, dtype=np.float32).reshape(4, 6), np.ones((8, 6), dtype=np.float32)]
    grids = [np.array([[1, 2, 2]]), np.array([[1, 2, 4]])]
    items = [MMItem(g, pixel_checksum(p), p) for p, g in zip(pixels, grids, strict=True)]
    sidecar = MultiModalData(["a" * 32, "b" * 32], [Placeholder(1, 1), Placeholder(3, 2)], items)
    body = build_body(get_codec("vllm"), "qwen3-vl", [1, 2, 3, 4, 5, 6], sidecar, [True, True], 16)
    obj = json.loads(body)
    assert body == json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    sent = obj["features"]["kwargs_data"]["image"]
    assert base64.b64decode(sent[0]) == first_of_two_items()
    assert [decode_item(base64.b64decode(t)).checksum for t in sent] == [it.checksum for it in items]


def test_engine_resolves_vllm_items_and_refuses_bad_ones() -> None:
    """Through the engine's HTTP app: vLLM items are decoded, checked, cached and checksummed;
    a malformed one is a 400 naming the problem; GET /v1/models lists the presets."""
    import warnings

    from mmbench.world.engine.app import EngineConfig, create_app
    from mmbench.world.wire import GENERATE_PATH

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    pv = np.random.default_rng(0).standard_normal((16, 24)).astype(np.float32)
    item = MMItem(np.array([[1, 4, 4]]), pixel_checksum(pv), pv)
    sidecar = MultiModalData(["h" * 32], [Placeholder(2, 4)], [item])
    body = build_body(get_codec("vllm"), "qwen3-vl", list(range(8)), sidecar, [True], 16)
    headers = {"content-type": "application/json"}
    with TestClient(create_app(EngineConfig()), raise_server_exceptions=False) as c:
        ok = c.post(GENERATE_PATH, content=body, headers=headers)
        assert ok.status_code == 200, ok.text
        assert ok.json()["item_checksums"] == [item.checksum]
        null = body.replace(json.loads(body)["features"]["kwargs_data"]["image"][0].encode(), b"")
        cached = c.post(GENERATE_PATH, content=null.replace(b'[""]', b"[null]"), headers=headers)
        assert cached.json()["item_checksums"] == [item.checksum]  # served from the cache
        bad = _mutated(["pixel_values", "data", 0], "float64")
        text = base64.b64encode(bad).decode()
        refused = c.post(
            GENERATE_PATH,
            content=body.replace(
                json.loads(body)["features"]["kwargs_data"]["image"][0].encode(), text.encode()
            ),
            headers=headers,
        )
        assert refused.status_code == 400 and "unsupported dtype" in refused.json()["error"]
        models = c.get("/v1/models").json()
        assert {m["id"] for m in models["data"]} == set(MODELS)
        assert all(m["max_model_len"] > 0 for m in models["data"])
