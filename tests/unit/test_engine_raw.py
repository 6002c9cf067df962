"""The engine's raw-media path in-process: content parts in, expanded prompt and placeholders out
(PyPI renderers 0.1.12 `process_multimodal=False`; vLLM's /inference/v1/generate), and every way
a media URL is refused."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmbench.rollout.raw import count_wrong
from mmbench.world.codec import pixel_checksum
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, SourceStore, make_source
from mmbench.world.media import AssetStore, MediaError, data_url, disk_bytes, load_media
from mmbench.world.renderer import Renderer
from mmbench.world.wire import GENERATE_PATH, IMAGE_PAD_TOKEN, raw_request_object

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

SPEC = SourceSpec(64, 64, "png", "photo", 0)
GEOMETRY = get_geometry("qwen3-vl")
TOKENS = GEOMETRY.layout(64, 64).tokens  # 64x64 is padded up to 256x256: 256 tokens


def source(i: int) -> bytes:
    return make_source(SPEC, 0, i, 0)


def prompt(n_images: int) -> list[int]:
    """Two text tokens, then one pad per image with a text token after each."""
    out = [11, 12]
    for i in range(n_images):
        out += [IMAGE_PAD_TOKEN, 100 + i]
    return out


def body(urls: list[str], tokens: list[int] | None = None, model: str = "qwen3-vl", **extra: object) -> bytes:
    obj = raw_request_object(model, prompt(len(urls)) if tokens is None else tokens, urls, 8)
    obj.update(extra)
    return json.dumps(obj).encode()


def post(c: TestClient, content: bytes):  # -> httpx.Response
    return c.post(GENERATE_PATH, content=content, headers={"content-type": "application/json"})


def make_client(**config: object) -> TestClient:
    return TestClient(create_app(EngineConfig(**config)), raise_server_exceptions=False)  # type: ignore[arg-type]


@pytest.fixture
def engine() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def expected_checksum(src: bytes, dtype: str = "float32") -> int:
    return Renderer(GEOMETRY, 0, dtype).process(src).item.checksum


# --- the happy path ------------------------------------------------------------------------


def test_data_urls_are_preprocessed_expanded_and_checksummed(engine: TestClient) -> None:
    urls = [data_url(source(i), "png") for i in range(2)]
    r = post(engine, body(urls))
    assert r.status_code == 200, r.text
    answer = r.json()
    expanded = answer["prompt_token_ids"]
    assert len(expanded) == len(prompt(2)) - 2 + 2 * TOKENS
    spans = answer["mm_placeholders"]["image"]
    assert spans == [{"offset": 2, "length": TOKENS}, {"offset": 3 + TOKENS, "length": TOKENS}]
    for span in spans:
        assert expanded[span["offset"] : span["offset"] + span["length"]] == [IMAGE_PAD_TOKEN] * TOKENS
    assert expanded[2 + TOKENS] == 100  # the text between the images is kept in order
    assert answer["item_checksums"] == [expected_checksum(source(i)) for i in range(2)]
    assert len(answer["token_ids"]) == len(answer["logprobs"]) == 16


def test_a_cached_image_is_decoded_and_hashed_but_not_preprocessed_again(engine: TestClient) -> None:
    first = data_url(source(0), "png")
    assert post(engine, body([first])).status_code == 200
    r = post(engine, body([first, data_url(source(1), "png")]))
    assert r.status_code == 200
    s = engine.get("/stats").json()
    assert s["preprocess_calls"] == 2  # each distinct image once
    assert (s["cache_hits"], s["cache_misses"]) == (1, 2)
    assert s["media_bytes"] == 2 * len(source(0)) + len(source(1))
    assert s["cpu_s"] > 0


def test_without_a_cache_every_image_is_preprocessed_every_time() -> None:
    with make_client(cache_bytes=0) as c:
        urls = [data_url(source(i), "png") for i in range(2)]
        for _ in range(2):
            assert post(c, body(urls)).status_code == 200
        assert c.get("/stats").json()["preprocess_calls"] == 4


def test_prompt_token_ids_only_when_asked(engine: TestClient) -> None:
    r = post(engine, body([data_url(source(0), "png")], return_token_ids=False))
    assert r.status_code == 200
    assert "prompt_token_ids" not in r.json() and "mm_placeholders" in r.json()


def test_file_urls_inside_the_asset_directory_are_read(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "assets")
    url = store.put(source(0), "png")
    assert store.put(source(0), "png") == url  # written once per distinct image
    assert disk_bytes(tmp_path / "assets") == len(source(0)) == store.bytes_written
    with make_client(allowed_media_dir=str(tmp_path / "assets")) as c:
        r = post(c, body([url]))
        assert r.status_code == 200, r.text
        assert r.json()["item_checksums"] == [expected_checksum(source(0))]


def test_bfloat16_engine_derives_what_a_bfloat16_client_expects() -> None:
    with make_client(dtype="bfloat16") as c:
        r = post(c, body([data_url(source(0), "png")]))
        assert r.json()["item_checksums"] == [expected_checksum(source(0), "bfloat16")]


# --- refusals: one line, a 4xx, and the engine goes on ------------------------------------


def refused(c: TestClient, content: bytes, status: int, words: str) -> None:
    r = post(c, content)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "\n" not in message
    assert post(c, body([data_url(source(0), "png")])).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        (
            "data:image/png;base64," + base64.b64encode(b"not an image at all").decode(),
            400,
            "not a decodable image",
        ),
        ("data:text/plain;base64,aGVsbG8=", 415, "unsupported media type 'text/plain'"),
        ("data:image/png,rawbytes", 400, "must be base64"),
        ("data:image/png;base64,@@@@", 400, "not valid base64"),
        ("data:image/png;base64", 400, "no ','"),
        ("http://127.0.0.1:1/x.png", 400, "unsupported media URL scheme 'http'"),
        ("file:///etc/passwd", 403, "file:// URLs are refused"),
    ],
)
def test_bad_media_is_refused(engine: TestClient, url: str, status: int, words: str) -> None:
    refused(engine, body([url]), status, words)


def test_a_file_outside_the_asset_directory_is_refused_unread(tmp_path: Path) -> None:
    allowed = tmp_path / "assets"
    allowed.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(source(0))
    (allowed / "link.png").symlink_to(secret)
    with make_client(allowed_media_dir=str(allowed)) as c:
        for url in (secret.as_uri(), f"file://{allowed}/../secret.png", (allowed / "link.png").as_uri()):
            refused(c, body([url]), 403, "outside the allowed local media directory")
        refused(c, body([(allowed / "missing.png").as_uri()]), 404, "does not exist")
        refused(c, body(["file://otherhost/x.png"]), 403, "names a host")
        assert c.get("/stats").json()["media_bytes"] == 5 * len(source(0))  # only the probes' images


def test_an_image_beyond_the_supported_size_is_refused_before_decoding(engine: TestClient) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 300)).save(buf, format="PNG")  # aspect ratio 300 > 200
    refused(engine, body([data_url(buf.getvalue(), "png")]), 400, "aspect ratio")


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (body(["data:image/png;base64,AA=="], tokens=[1, 2]), 400, "0 image placeholder tokens"),
        (body(["x", "y"], tokens=prompt(1)), 400, "has 2 images"),
        (body(["x"], model="no-such-model"), 404, "does not exist"),
        (
            json.dumps(
                {
                    "model": "qwen3-vl",
                    "token_ids": [IMAGE_PAD_TOKEN],
                    "content_parts": [{"type": "video_url", "url": "x"}],
                }
            ).encode(),
            400,
            "unsupported type 'video_url'",
        ),
        (
            body(["x"], features={"mm_hashes": {"image": []}, "mm_placeholders": {"image": []}}),
            400,
            "either features or content_parts",
        ),
    ],
)
def test_malformed_raw_requests_are_refused(
    engine: TestClient, content: bytes, status: int, words: str
) -> None:
    refused(engine, content, status, words)


def test_load_media_limits_the_size(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as info:
        load_media(data_url(b"x" * 1000, "png"), None, max_bytes=100)
    assert info.value.status == 413
    big = tmp_path / "big.png"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(MediaError) as info:
        load_media(big.as_uri(), tmp_path.resolve(), max_bytes=100)
    assert info.value.status == 413


# --- the client's check after the run ----------------------------------------------------


def test_count_wrong_compares_with_the_clients_own_derivation(tmp_path: Path) -> None:
    store = SourceStore(SPEC, tmp_path)
    right = expected_checksum(make_source(SPEC, 0, 1, 0))
    checks = [(0, 1, right), (0, 1, right), (0, 1, right ^ 1)]
    assert count_wrong(checks, store, GEOMETRY, "float32", images_per_turn=1) == 1
    cached = list(store.dir.glob("*.crc32"))  # type: ignore[union-attr]
    assert len(cached) == 1 and int(cached[0].read_text()) == right
    assert (
        pixel_checksum(Renderer(GEOMETRY, 0).process(make_source(SPEC, 0, 1, 0)).item.pixel_values) == right
    )  # type: ignore[arg-type]
