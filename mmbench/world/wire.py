"""The wire format of POST /inference/v1/generate: one place that builds and checks it.

Body: `model`, `token_ids`, `sampling_params`, and either
- `features` with `mm_hashes`, `mm_placeholders` and `kwargs_data` ({"image": [base64 item | null,
  ...]}, or null when every item is null): the processed path, token_ids already expanded; or
- `content_parts` ([{"type": "image_url", "url": ...}, ...], every image of the prompt in order)
  with `return_token_ids: true`: the raw-media path. token_ids carry one `<|image_pad|>` per image;
  the engine preprocesses the media, expands each pad to the image's tokens and answers with
  `prompt_token_ids` and `mm_placeholders` as vLLM does.
The client builds it (mmbench.world.client); the engine checks it here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import pybase64

GENERATE_PATH = "/inference/v1/generate"
MODALITY = "image"
MAX_TOKEN_ID = 2**31
IMAGE_PAD_TOKEN = 151_655  # Qwen's <|image_pad|>
IMAGE_URL = "image_url"  # the content part type of an image


class WireError(ValueError):
    """A request that does not follow the wire format (the engine answers 400 with it)."""


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    token_ids: list[int]
    hashes: list[str]
    placeholders: list[tuple[int, int]]
    kwargs: list[bytes | None]  # the decoded item bytes, or None for a slot served from the cache
    media: list[str] = field(default_factory=list)  # raw path: every image's URL, in prompt order
    return_token_ids: bool = False


def request_object(
    model: str,
    token_ids: list[int],
    hashes: list[str],
    placeholders: list[tuple[int, int]],
    kwargs: list[str | None],
    max_tokens: int,
) -> dict[str, Any]:
    return {
        "model": model,
        "token_ids": token_ids,
        "sampling_params": {"max_tokens": max_tokens, "temperature": 1.0, "logprobs": 1},
        "features": {
            "mm_hashes": {MODALITY: hashes},
            "mm_placeholders": {MODALITY: [{"offset": o, "length": n} for o, n in placeholders]},
            "kwargs_data": None if all(k is None for k in kwargs) else {MODALITY: kwargs},
        },
    }


def raw_request_object(model: str, token_ids: list[int], urls: list[str], max_tokens: int) -> dict[str, Any]:
    """The raw-media path's body, as the released client builds it (`process_multimodal=False`)."""
    return {
        "model": model,
        "token_ids": token_ids,
        "sampling_params": {"max_tokens": max_tokens, "temperature": 1.0, "logprobs": 1},
        "content_parts": [{"type": IMAGE_URL, "url": url} for url in urls],
        "return_token_ids": True,
    }


# The engine decodes a body straight into these types: JSON parsing, type checks and the base64
# decoding of every item happen in one pass (msgspec), which is what keeps a sweep's wall time
# within budget; the checks that need the whole request (alignment, bounds) follow in Python.
TokenId = Annotated[int, msgspec.Meta(ge=0, lt=MAX_TOKEN_ID)]
Hash = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class _Placeholder(msgspec.Struct):
    offset: Annotated[int, msgspec.Meta(ge=0)]
    length: Annotated[int, msgspec.Meta(gt=0)]


class _Features(msgspec.Struct):
    mm_hashes: dict[str, list[Hash]]
    mm_placeholders: dict[str, list[_Placeholder]]
    # Items stay raw JSON here (views into the body, no copy) and are base64-decoded by _item with
    # pybase64's SIMD decoder, about twice as fast as decoding them while parsing.
    kwargs_data: dict[str, list[msgspec.Raw]] | None = None


class _ContentPart(msgspec.Struct):
    type: str
    url: Annotated[str, msgspec.Meta(min_length=1)]


class _Request(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    token_ids: list[TokenId]
    sampling_params: dict[str, Any] | None = None
    features: _Features | None = None
    content_parts: list[_ContentPart] | None = None
    return_token_ids: bool = False


_DECODER = msgspec.json.Decoder(_Request)
_QUOTE = ord('"')
_NULL = b"null"
_KINDS = {ord("{"): "object", ord("["): "array", ord("t"): "bool", ord("f"): "bool"}


def _json_kind(raw: memoryview) -> str:
    if not len(raw):
        return "nothing"
    kind = _KINDS.get(raw[0])
    if kind is None:
        kind = "float" if any(c in raw.tobytes()[:64] for c in b".eE") else "int"
    return kind


def _item(raw: msgspec.Raw, where: str) -> bytes | None:
    """One kwargs_data item: the bytes its base64 text decodes to, or None for null. The same
    answers as decoding the item as `bytes | None` while parsing, in msgspec's words."""
    view = memoryview(raw)
    if len(view) and view[0] == _QUOTE:
        with contextlib.suppress(ValueError):  # binascii.Error is a ValueError
            return pybase64.b64decode(view[1:-1], validate=True)
        try:  # valid JSON may escape characters ("\/"): unescape, then decode
            return pybase64.b64decode(msgspec.json.decode(view, type=str), validate=True)
        except (ValueError, msgspec.DecodeError):
            raise WireError(f"invalid request: Invalid base64 encoded string - at `{where}`") from None
    if view == _NULL:
        return None
    raise WireError(f"invalid request: Expected `bytes | null`, got `{_json_kind(view)}` - at `{where}`")


def _only_image(value: dict[str, Any], key: str) -> Any:
    if set(value) != {MODALITY}:
        raise WireError(f'features.{key} must be an object {{"{MODALITY}": [...]}}, got keys {sorted(value)}')
    return value[MODALITY]


def parse_request(body: bytes | bytearray) -> GenerateRequest:
    """Decode and check a request body; raise WireError naming the first problem."""
    try:
        req = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise WireError(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"body is not valid JSON: {exc}") from None
    if req.content_parts is not None:
        return _raw_request(req)
    if req.features is None:
        return GenerateRequest(req.model, req.token_ids, [], [], [])
    f = req.features
    hashes: list[str] = _only_image(f.mm_hashes, "mm_hashes")
    placeholders = [(p.offset, p.length) for p in _only_image(f.mm_placeholders, "mm_placeholders")]
    kwargs: list[bytes | None] = (
        [None] * len(hashes)
        if f.kwargs_data is None
        else [
            _item(raw, f"$.features.kwargs_data.{MODALITY}[{i}]")
            for i, raw in enumerate(_only_image(f.kwargs_data, "kwargs_data"))
        ]
    )
    if not (len(hashes) == len(placeholders) == len(kwargs)):
        raise WireError(
            f"misaligned features: {len(hashes)} hashes, {len(placeholders)} placeholders, "
            f"{len(kwargs)} kwargs_data items"
        )
    for offset, length in placeholders:
        if offset + length > len(req.token_ids):
            raise WireError(
                f"placeholder ({offset}, {length}) lies outside the {len(req.token_ids)} prompt tokens"
            )
    return GenerateRequest(req.model, req.token_ids, hashes, placeholders, kwargs)


def _raw_request(req: _Request) -> GenerateRequest:
    """The raw-media path: content parts (images only), one `<|image_pad|>` token per part."""
    assert req.content_parts is not None
    if req.features is not None:
        raise WireError("a request carries either features or content_parts, not both")
    for i, part in enumerate(req.content_parts):
        if part.type != IMAGE_URL:
            raise WireError(f"content_parts[{i}]: unsupported type {part.type[:40]!r}; only {IMAGE_URL!r}")
    pads = req.token_ids.count(IMAGE_PAD_TOKEN)
    if pads != len(req.content_parts):
        raise WireError(
            f"token_ids carry {pads} image placeholder tokens but content_parts has "
            f"{len(req.content_parts)} images"
        )
    urls = [part.url for part in req.content_parts]
    return GenerateRequest(req.model, req.token_ids, [], [], [], urls, req.return_token_ids)
