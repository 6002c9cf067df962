"""Transport modes (docs domain.md sections 5 and 6): sent-hash LRU, plans, bodies, stored data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmbench.errors import MmbenchError
from mmbench.transports import MODES, TRANSPORTS, make_transport
from mmbench.transports.base import SentHashes, Ship
from mmbench.transports.hash_only import HashOnlyTransport
from mmbench.world.client import build_body
from mmbench.world.codec import decode_item, get_codec, pixel_checksum
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder

URL = "http://127.0.0.1:1"
MODEL = "qwen3-vl"
HASHES = ["a" * 32, "b" * 32, "c" * 32]
P, N, M = Ship.PIXELS, Ship.NULL, Ship.MEDIA


def make_sidecar(n: int = 3, seed: int = 0) -> MultiModalData:
    """n items of 16 pixel rows (grid 1x4x4, 4 placeholder tokens each), one after another."""
    rng = np.random.default_rng(seed)
    items: list[MMItem] = []
    placeholders: list[Placeholder] = []
    for i in range(n):
        pv = rng.standard_normal((16, 24)).astype(np.float32)
        items.append(MMItem(np.array([[1, 4, 4]], dtype=np.int64), pixel_checksum(pv), pv))
        placeholders.append(Placeholder(2 + 6 * i, 4))
    return MultiModalData(list(HASHES[:n]), placeholders, items)


def token_ids(n_items: int = 3) -> list[int]:
    return list(range(2 + 6 * n_items))


# --- SentHashes ------------------------------------------------------------------------------


def test_sent_hashes_lru_drops_the_oldest_beyond_its_bound() -> None:
    sent = SentHashes(3)
    for h in ("h1", "h2", "h3", "h4"):
        sent.touch(h)
    assert len(sent) == 3
    assert "h1" not in sent
    assert all(h in sent for h in ("h2", "h3", "h4"))


def test_sent_hashes_touch_refreshes_recency() -> None:
    sent = SentHashes(3)
    for h in ("h1", "h2", "h3"):
        sent.touch(h)
    sent.touch("h1")  # h2 is now the least recently used
    sent.touch("h4")
    assert "h1" in sent
    assert "h2" not in sent
    assert "h3" in sent and "h4" in sent
    assert len(sent) == 3


def test_sent_hashes_forget_and_bound_check() -> None:
    sent = SentHashes(2)
    sent.touch("x")
    sent.forget("x")
    sent.forget("never-sent")  # no error
    assert "x" not in sent and len(sent) == 0
    with pytest.raises(ValueError, match="0"):
        SentHashes(0)


# --- plans -----------------------------------------------------------------------------------


def test_hash_only_plan_nulls_exactly_the_sent_hashes() -> None:
    t = HashOnlyTransport(sent_hashes_max=10)
    assert t.plan(URL, MODEL, HASHES) == [P, P, P]
    t.on_success(URL, MODEL, HASHES[:2])
    assert t.plan(URL, MODEL, HASHES) == [N, N, P]
    # Remembered per (endpoint, model).
    assert t.plan("http://other:2", MODEL, HASHES) == [P, P, P]
    assert t.plan(URL, "qwen2-vl", HASHES) == [P, P, P]
    # An engine error forgets the request's hashes.
    t.on_error(URL, MODEL, HASHES[:1])
    assert t.plan(URL, MODEL, HASHES) == [P, N, P]


def test_hash_only_sent_hashes_bound_comes_from_the_transport() -> None:
    t = make_transport("hash-only", 2)
    t.on_success(URL, MODEL, HASHES)  # 3 hashes into an LRU of 2
    assert t.plan(URL, MODEL, HASHES) == [P, N, N]


@pytest.mark.parametrize("mode", ["full", "ephemeral"])
def test_non_hash_modes_always_ship_everything(mode: str) -> None:
    t = make_transport(mode, 10)
    t.on_success(URL, MODEL, HASHES)
    assert t.plan(URL, MODEL, HASHES) == [P, P, P]


# --- request bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("codec_name", ["fast", "stdlib"])
def test_build_body_with_hash_only_mask(codec_name: str) -> None:
    codec = get_codec(codec_name)
    t = HashOnlyTransport(sent_hashes_max=10)
    t.on_success(URL, MODEL, HASHES[:2])
    mask = t.plan(URL, MODEL, HASHES)
    assert mask == [N, N, P]
    sidecar = make_sidecar()
    # Items sent as null slots may be descriptors, as a stored hash-only sidecar gives them.
    sidecar = sidecar.with_items([it.descriptor() for it in sidecar.items[:2]] + [sidecar.items[2]])
    body = build_body(codec, MODEL, token_ids(), sidecar, [s is P for s in mask], 16)
    obj = json.loads(body)
    feats = obj["features"]
    image = feats["kwargs_data"]["image"]
    assert image[:2] == [None, None]
    assert isinstance(image[2], str) and image[2]
    assert feats["mm_hashes"] == {"image": HASHES}
    assert feats["mm_placeholders"] == {
        "image": [{"offset": p.offset, "length": p.length} for p in sidecar.placeholders]
    }
    assert len(feats["mm_placeholders"]["image"]) == len(image) == 3
    assert obj["token_ids"] == token_ids()
    assert obj["model"] == MODEL
    assert obj["sampling_params"]["max_tokens"] == 16


@pytest.mark.parametrize("codec_name", ["fast", "stdlib"])
def test_build_body_all_sent_has_null_kwargs_data(codec_name: str) -> None:
    codec = get_codec(codec_name)
    sidecar = make_sidecar().descriptors_only()  # no pixels needed for null slots
    body = build_body(codec, MODEL, token_ids(), sidecar, [False, False, False], 16)
    assert b'"kwargs_data":null' in body.replace(b" ", b"")
    feats = json.loads(body)["features"]
    assert feats["kwargs_data"] is None
    assert feats["mm_hashes"]["image"] == HASHES


@pytest.mark.parametrize("codec_name", ["fast", "stdlib"])
def test_full_item_roundtrips_bit_for_bit(codec_name: str) -> None:
    codec = get_codec(codec_name)
    sidecar = make_sidecar()
    body = build_body(codec, MODEL, token_ids(), sidecar, [True, True, True], 16)
    image = json.loads(body)["features"]["kwargs_data"]["image"]
    assert len(image) == 3
    for text, item in zip(image, sidecar.items, strict=True):
        decoded = decode_item(codec.b64decode(text))
        assert item.pixel_values is not None
        assert decoded.pixel_dtype == "float32"
        assert decoded.pixel_values.shape == item.pixel_values.shape
        assert decoded.pixel_values.tobytes() == item.pixel_values.tobytes()
        assert np.array_equal(decoded.image_grid_thw, item.image_grid_thw)
        assert decoded.checksum == item.checksum == pixel_checksum(item.pixel_values)


def test_build_body_refuses_a_full_slot_without_pixels() -> None:
    sidecar = make_sidecar().descriptors_only()
    with pytest.raises(ValueError, match="item 1"):
        build_body(get_codec("fast"), MODEL, token_ids(), sidecar, [False, True, False], 16)


def test_codecs_build_the_same_object() -> None:
    sidecar = make_sidecar()
    mask = [False, True, True]
    fast = json.loads(build_body(get_codec("fast"), MODEL, token_ids(), sidecar, mask, 16))
    std = json.loads(build_body(get_codec("stdlib"), MODEL, token_ids(), sidecar, mask, 16))
    assert fast == std


# --- stored data -----------------------------------------------------------------------------

MASK = [N, P, N]


def test_full_stores_the_sidecar_as_is() -> None:
    sidecar = make_sidecar()
    stored = make_transport("full", 10).stored(sidecar, MASK)
    assert stored is sidecar
    assert all(it.has_pixels for it in stored.items)


def test_ephemeral_stores_descriptors_only() -> None:
    sidecar = make_sidecar()
    stored = make_transport("ephemeral", 10).stored(sidecar, [P, P, P])
    assert len(stored) == 3
    assert all(it.pixel_values is None for it in stored.items)
    assert stored.hashes == sidecar.hashes
    assert stored.placeholders == sidecar.placeholders
    for got, orig in zip(stored.items, sidecar.items, strict=True):
        assert got.checksum == orig.checksum
        assert np.array_equal(got.image_grid_thw, orig.image_grid_thw)
    # The input is not mutated.
    assert all(it.has_pixels for it in sidecar.items)


def test_hash_only_strips_exactly_the_null_slots() -> None:
    sidecar = make_sidecar()
    stored = make_transport("hash-only", 10).stored(sidecar, MASK)
    assert [it.has_pixels for it in stored.items] == [s is P for s in MASK]
    assert stored.items[1] is sidecar.items[1]
    assert stored.items[1].pixel_values is sidecar.items[1].pixel_values
    assert stored.hashes == sidecar.hashes
    assert [it.checksum for it in stored.items] == [it.checksum for it in sidecar.items]
    assert all(it.has_pixels for it in sidecar.items)


def test_ephemeral_hash_only_strips_everything() -> None:
    sidecar = make_sidecar()
    stored = make_transport("ephemeral+hash-only", 10).stored(sidecar, MASK)
    assert len(stored) == 3
    assert not any(it.has_pixels for it in stored.items)
    assert stored.hashes == sidecar.hashes


# --- registry --------------------------------------------------------------------------------


def test_modes_registry() -> None:
    assert MODES == ("full", "ephemeral", "hash-only", "ephemeral+hash-only", "raw", "raw-file")
    for mode in MODES:
        t = make_transport(mode, 7)
        assert t.name == mode
        assert isinstance(t, TRANSPORTS[mode])
        assert t.sent(URL, MODEL).max_items == 7
    assert [TRANSPORTS[m].needs_engine_cache for m in MODES] == [False, False, True, True, False, False]
    assert [TRANSPORTS[m].stores_pixels for m in MODES] == [True, False, True, False, False, False]
    assert [TRANSPORTS[m].renders for m in MODES] == [True, True, True, True, False, False]
    assert [TRANSPORTS[m].media for m in MODES] == [None, None, None, None, "data", "file"]


@pytest.mark.parametrize("mode", ["raw", "raw-file"])
def test_raw_modes_ship_every_item_as_media_every_time(mode: str) -> None:
    t = make_transport(mode, 10)
    t.on_success(URL, MODEL, HASHES)
    assert t.plan(URL, MODEL, HASHES) == [M, M, M]
    sidecar = make_sidecar()
    assert t.stored(sidecar, [M, M, M]) is sidecar  # nothing of a sidecar is made in these modes


def test_unknown_mode_lists_the_modes() -> None:
    with pytest.raises(MmbenchError) as info:
        make_transport("nope", 10)
    message = str(info.value)
    assert "'nope'" in message
    for mode in MODES:
        assert mode in message
