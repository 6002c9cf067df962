"""The engine's Starlette app in-process (docs domain.md sections 5 and 7)."""

from __future__ import annotations

import base64
import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmbench.world.codec import MAGIC, encode_item, pixel_checksum
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.wire import GENERATE_PATH, request_object

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient


ROWS = 16  # grid 1x4x4 -> 16 pixel rows -> 4 placeholder tokens
GRID = np.array([[1, 4, 4]], dtype=np.int64)
TOKENS = 4
WIDTH = 24
ITEM_NBYTES = ROWS * WIDTH * 4 + GRID.nbytes  # what the engine cache charges per item
PROMPT = 4 + 6 * 4  # room for 4 items at offsets 2, 8, 14, 20


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((ROWS, WIDTH)).astype(np.float32)


def item_text(pv: np.ndarray, grid: np.ndarray = GRID) -> str:
    return base64.b64encode(encode_item(pv, "float32", grid)).decode("ascii")


def body(hashes: list[str], kwargs: list[str | None], lengths: list[int] | None = None) -> bytes:
    lengths = lengths or [TOKENS] * len(hashes)
    placeholders = [(2 + 6 * i, n) for i, n in enumerate(lengths)]
    return json.dumps(
        request_object("qwen3-vl", list(range(PROMPT)), hashes, placeholders, kwargs, 8)
    ).encode()


def client(**config: int) -> TestClient:
    return TestClient(create_app(EngineConfig(**config)), raise_server_exceptions=False)


@pytest.fixture
def engine() -> Iterator[TestClient]:
    with client() as c:
        yield c


def post(c: TestClient, content: bytes, **kw: object):  # -> httpx.Response
    return c.post(GENERATE_PATH, content=content, headers={"content-type": "application/json"}, **kw)


def stats(c: TestClient) -> dict:
    r = c.get("/stats")
    assert r.status_code == 200
    return r.json()


def send_full(c: TestClient, h: str, seed: int) -> int:
    pv = pixels(seed)
    r = post(c, body([h], [item_text(pv)]))
    assert r.status_code == 200, r.text
    assert r.json()["item_checksums"] == [pixel_checksum(pv)]
    return pixel_checksum(pv)


def null_status(c: TestClient, h: str) -> int:
    return post(c, body([h], [None])).status_code


# --- the happy path and the cache --------------------------------------------------------


def test_full_item_then_null_slot_from_cache(engine: TestClient) -> None:
    pv = pixels(1)
    r = post(engine, body(["h1"], [item_text(pv)]))
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["item_checksums"] == [pixel_checksum(pv)]
    assert len(reply["token_ids"]) == len(reply["logprobs"]) == EngineConfig().completion_tokens
    assert stats(engine)["cache_hits"] == 0

    r = post(engine, body(["h1"], [None]))
    assert r.status_code == 200, r.text
    assert r.json()["item_checksums"] == [pixel_checksum(pv)]
    s = stats(engine)
    assert s["cache_hits"] == 1
    assert s["items_full"] == 1 and s["items_null"] == 1
    assert s["cache_items"] == 1 and s["cache_bytes"] == ITEM_NBYTES


def test_mixed_full_and_null_slots_keep_their_order(engine: TestClient) -> None:
    a = send_full(engine, "ha", 1)
    pb = pixels(2)
    r = post(engine, body(["ha", "hb"], [None, item_text(pb)]))
    assert r.status_code == 200, r.text
    assert r.json()["item_checksums"] == [a, pixel_checksum(pb)]


def test_unknown_hash_as_null_is_a_retryable_500_naming_it_as_vllm_answers(engine: TestClient) -> None:
    h = "f" * 32
    r = post(engine, body([h], [None]))
    assert r.status_code == 500  # vLLM 0.32: retryable, so a router treats both engines alike
    assert f"Expected a cached item for mm_hash {h}" in r.json()["error"]
    assert "P0/P1 cache drift" in r.json()["error"]
    assert stats(engine)["cache_misses"] == 1
    assert post(engine, body([h], [item_text(pixels(1))])).status_code == 200  # it serves on


def test_cache_bytes_zero_fails_every_null_slot() -> None:
    with client(cache_bytes=0) as c:
        send_full(c, "h1", 1)
        send_full(c, "h2", 2)
        for h in ("h1", "h2", "h1"):
            r = post(c, body([h], [None]))
            assert r.status_code == 500
            assert f"Expected a cached item for mm_hash {h}" in r.json()["error"]
        s = stats(c)
        assert s["cache_items"] == 0 and s["cache_bytes"] == 0 and s["cache_hits"] == 0


def test_cache_is_lru_by_bytes() -> None:
    with client(cache_bytes=2 * ITEM_NBYTES) as c:
        send_full(c, "A", 1)
        send_full(c, "B", 2)
        send_full(c, "C", 3)  # evicts A, the least recently used
        assert null_status(c, "A") == 500
        assert null_status(c, "B") == 200
        assert null_status(c, "C") == 200
        s = stats(c)
        assert s["cache_items"] == 2 and s["cache_evictions"] == 1
        assert s["cache_bytes"] <= 2 * ITEM_NBYTES


def test_cache_hit_refreshes_recency() -> None:
    with client(cache_bytes=2 * ITEM_NBYTES) as c:
        send_full(c, "A", 1)
        send_full(c, "B", 2)
        assert null_status(c, "A") == 200  # A is now the most recently used
        send_full(c, "C", 3)  # evicts B
        assert null_status(c, "B") == 500
        assert null_status(c, "A") == 200
        assert null_status(c, "C") == 200


def test_item_larger_than_the_cache_is_not_stored() -> None:
    with client(cache_bytes=ITEM_NBYTES - 1) as c:
        send_full(c, "A", 1)
        assert null_status(c, "A") == 500
        assert stats(c)["cache_items"] == 0


def test_full_item_replaces_a_cached_one_with_the_same_hash(engine: TestClient) -> None:
    send_full(engine, "A", 1)
    new = send_full(engine, "A", 2)
    r = post(engine, body(["A"], [None]))
    assert r.status_code == 200 and r.json()["item_checksums"] == [new]
    assert stats(engine)["cache_bytes"] == ITEM_NBYTES


# --- malformed requests ------------------------------------------------------------------

GOOD = item_text(pixels(9))
GRID_LIST = ["image_grid_thw", "int64", [1, 3]]


def _crafted(spec: object, payload: bytes) -> str:
    head = json.dumps({"tensors": spec}).encode()
    return base64.b64encode(MAGIC + struct.pack("<I", len(head)) + head + payload).decode()


def _malformed() -> list[tuple[str, bytes, str]]:
    def obj(**over: object) -> bytes:
        base = json.loads(body(["h"], [GOOD]))
        base.update(over)
        return json.dumps(base).encode()

    def feats(**over: object) -> bytes:
        base = json.loads(body(["h"], [GOOD]))
        base["features"].update(over)
        return json.dumps(base).encode()

    garbage = base64.b64encode(b"this is not an item at all, just bytes").decode()
    truncated = base64.b64encode(encode_item(pixels(1), "float32", GRID)[:-9]).decode()
    outside = [{"offset": PROMPT - 2, "length": 4}]
    no_shape = _crafted([["pixel_values", "float32"], GRID_LIST], b"")
    list_dtype = _crafted([["pixel_values", ["x"], [1]], GRID_LIST], b"")
    return [
        ("non-json", b"{not json", "JSON"),
        ("empty", b"", "JSON"),
        ("array", b"[1, 2, 3]", "object"),
        ("string token", obj(token_ids=[1, "2", 3]), "token_ids"),
        ("negative token", obj(token_ids=[1, -2, 3]), "token_ids"),
        ("no model", obj(model=""), "model"),
        ("features not object", obj(features=[1]), "features"),
        ("two hashes", feats(mm_hashes={"image": ["h", "i"]}), "misaligned"),
        (
            "two placeholders",
            feats(mm_placeholders={"image": [{"offset": 0, "length": 4}] * 2}),
            "misaligned",
        ),
        ("two kwargs", feats(kwargs_data={"image": [GOOD, GOOD]}), "misaligned"),
        ("placeholder outside", feats(mm_placeholders={"image": outside}), "outside"),
        (
            "placeholder negative",
            feats(mm_placeholders={"image": [{"offset": -1, "length": 4}]}),
            "offset",
        ),
        (
            "placeholder not ints",
            feats(mm_placeholders={"image": [{"offset": "0", "length": 4}]}),
            "placeholder",
        ),
        ("kwargs not str", feats(kwargs_data={"image": [7]}), "kwargs_data"),
        ("wrong modality", feats(mm_hashes={"video": ["h"]}), "mm_hashes"),
        ("bad base64", body(["h"], ["!!!! not base64 ****"]), "base64"),
        ("base64 of garbage", body(["h"], [garbage]), "MMB1"),
        ("truncated item", body(["h"], [truncated]), "truncated"),
        ("dtype as a list", body(["h"], [list_dtype]), "mm_hash h"),
        ("tensor without shape", body(["h"], [no_shape]), "mm_hash h"),
        ("tensors not a list", body(["h"], [_crafted({"a": 1}, b"")]), "mm_hash h"),
        ("placeholder vs grid", body(["h"], [GOOD], lengths=[TOKENS + 1]), "disagree"),
        (
            "rows vs grid",
            body(["h"], [item_text(pixels(1), np.array([[1, 4, 8]]))], lengths=[8]),
            "disagree",
        ),
    ]


MALFORMED = _malformed()


@pytest.mark.parametrize(("content", "needle"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_a_4xx_and_the_app_keeps_answering(
    engine: TestClient, content: bytes, needle: str
) -> None:
    r = post(engine, content)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert needle in r.json()["error"]
    assert stats(engine)["cache_items"] == 0  # nothing half-done was cached
    send_full(engine, "ok", 5)


def test_all_malformed_requests_in_a_row_then_a_valid_one(engine: TestClient) -> None:
    for _, content, _ in MALFORMED:
        assert 400 <= post(engine, content).status_code < 500
    send_full(engine, "ok", 5)
    s = stats(engine)
    assert s["errors"] == len(MALFORMED)
    assert s["ok"] == 1
    assert s["requests"] == len(MALFORMED) + 1


def test_body_over_max_body_bytes_is_413() -> None:
    content = body(["h"], [GOOD])
    with client(max_body_bytes=len(content) - 1) as c:
        r = post(c, content)
        assert r.status_code == 413
        assert str(len(content) - 1) in r.json()["error"]
        # Chunked, without a content-length: still refused once the limit is passed.
        r = post(c, iter([content[:100], content[100:]]))  # type: ignore[arg-type]
        assert r.status_code == 413
        # A body that fits still works.
        small = body([], [])
        assert post(c, small).status_code == 200
        assert stats(c)["status_counts"] == {"413": 2, "200": 1}


def test_bytes_received_is_the_sum_of_body_lengths(engine: TestClient) -> None:
    bodies = [
        body(["h1"], [item_text(pixels(1))]),
        body(["h1", "h2"], [None, item_text(pixels(2))]),
        body(["h1", "h2"], [None, None]),
        body(["zz"], [None]),  # a 400 is still received in full
        b"[not json",
    ]
    for content in bodies:
        post(engine, content)
    assert stats(engine)["bytes_received"] == sum(len(b) for b in bodies)


# --- inputs that crash the app (bugs; see the report) ------------------------------------


CRAFTED = [
    pytest.param(
        json.dumps(request_object("m", [2**63], [], [], [], 4)).encode(),
        id="token id 2**63 (OverflowError in np.asarray int64)",
    ),
    pytest.param(
        body(
            ["h"],
            [_crafted([["pixel_values", "float32", []], GRID_LIST], b"\0" * 4 + GRID.tobytes())],
        ),
        id="pixel_values shape [] (IndexError on shape[0])",
    ),
    pytest.param(
        body(
            ["h"],
            [
                _crafted(
                    [["pixel_values", "float32", [4, 2]], GRID_LIST],
                    b"\0" * 32 + np.array([[1, -2, -2]], dtype=np.int64).tobytes(),
                )
            ],
            lengths=[1],
        ),
        id="negative grid [1,-2,-2] is accepted and cached",
    ),
]


@pytest.mark.parametrize("content", CRAFTED)
def test_crafted_input_is_a_4xx(engine: TestClient, content: bytes) -> None:
    r = post(engine, content)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


# --- vLLM's answer shape (the renderers library's client reads it) -------------------------


def test_the_answer_carries_vllms_shape_beside_mmbenchs_own_keys(engine: TestClient) -> None:
    reply = post(engine, body(["h1"], [item_text(pixels(1))])).json()
    for key in ("token_ids", "logprobs", "item_checksums", "request_id", "choices"):
        assert key in reply
    (choice,) = reply["choices"]
    assert choice["token_ids"] == reply["token_ids"]
    assert choice["finish_reason"] == "length"
    content = choice["logprobs"]["content"]
    assert [e["token"] for e in content] == [f"token_id:{t}" for t in reply["token_ids"]]
    assert [e["logprob"] for e in content] == reply["logprobs"]
    second = post(engine, body(["h1"], [None])).json()
    assert second["request_id"] != reply["request_id"]


def test_the_renderers_client_accepts_the_answer() -> None:
    client_module = pytest.importorskip("renderers.client")
    with client() as c:
        raw = post(c, body(["h1"], [item_text(pixels(1))])).content
    data = client_module.parse_generate_response(raw)
    choice = data["choices"][0]
    logprobs = client_module._parse_completion_logprobs(choice, choice["token_ids"])
    assert logprobs == data["logprobs"]


def test_models_lists_every_preset_with_a_max_model_len(engine: TestClient) -> None:
    r = engine.get("/v1/models")
    assert r.status_code == 200
    cards = {card["id"]: card for card in r.json()["data"]}
    assert set(cards) == {"qwen3-vl", "qwen2-vl", "qwen3.5", "qwen3.6", "kimi-k2.5"}
    assert all(isinstance(c["max_model_len"], int) and c["max_model_len"] > 0 for c in cards.values())


def test_the_request_log_has_a_line_per_request_in_the_order_answered(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with TestClient(create_app(EngineConfig(request_log=str(log))), raise_server_exceptions=False) as c:
        send_full(c, "ha", 1)
        assert null_status(c, "ha") == 200
        assert null_status(c, "hb") == 500
        assert post(c, b"{").status_code == 400  # not even JSON: logged, with nothing it carried
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["request"] for x in lines] == [1, 2, 3, 4]
    assert [x["status"] for x in lines] == [200, 200, 500, 400]
    assert [x["hashes"] for x in lines] == [["ha"], ["ha"], ["hb"], []]
    assert [x["null_slots"] for x in lines] == [0, 1, 1, 0]
    for x in lines:
        assert x["arrived_s"] <= x["read_s"] <= x["answered_s"]
