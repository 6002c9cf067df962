"""The wire format of POST /inference/v1/generate: one place that builds and checks it.

Body: `model`, `token_ids`, `sampling_params`, and `features` with `mm_hashes`,
`mm_placeholders` and `kwargs_data` ({"image": [base64 item | null, ...]}, or null when every
item is null). The client builds it (mmbench.world.client); the engine checks it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GENERATE_PATH = "/inference/v1/generate"
MODALITY = "image"
MAX_TOKEN_ID = 2**31


class WireError(ValueError):
    """A request that does not follow the wire format (the engine answers 400 with it)."""


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    model: str
    token_ids: list[int]
    hashes: list[str]
    placeholders: list[tuple[int, int]]
    kwargs: list[str | None]  # base64 item text, or None for a slot served from the cache


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


def _modality_list(features: dict[str, Any], key: str, allow_null: bool = False) -> list[Any] | None:
    value = features.get(key)
    if value is None and allow_null:
        return None
    if not isinstance(value, dict) or set(value) != {MODALITY} or not isinstance(value[MODALITY], list):
        raise WireError(f'features.{key} must be an object {{"{MODALITY}": [...]}}')
    return value[MODALITY]


def parse_request(obj: Any) -> GenerateRequest:
    """Check types and alignment; raise WireError naming the first problem."""
    if not isinstance(obj, dict):
        raise WireError("body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise WireError("model must be a non-empty string")
    token_ids = obj.get("token_ids")
    if not isinstance(token_ids, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_TOKEN_ID for t in token_ids
    ):
        raise WireError(f"token_ids must be a list of integers in [0, {MAX_TOKEN_ID})")
    features = obj.get("features")
    if features is None:
        return GenerateRequest(model, token_ids, [], [], [])
    if not isinstance(features, dict):
        raise WireError("features must be an object")
    hashes = _modality_list(features, "mm_hashes") or []
    if not all(isinstance(h, str) and h for h in hashes):
        raise WireError("mm_hashes must be non-empty strings")
    raw_ph = _modality_list(features, "mm_placeholders") or []
    placeholders: list[tuple[int, int]] = []
    for ph in raw_ph:
        if not (
            isinstance(ph, dict) and isinstance(ph.get("offset"), int) and isinstance(ph.get("length"), int)
        ):
            raise WireError('each placeholder must be {"offset": int, "length": int}')
        offset, length = ph["offset"], ph["length"]
        if offset < 0 or length <= 0 or offset + length > len(token_ids):
            raise WireError(
                f"placeholder ({offset}, {length}) lies outside the {len(token_ids)} prompt tokens"
            )
        placeholders.append((offset, length))
    kwargs_list = _modality_list(features, "kwargs_data", allow_null=True)
    kwargs: list[str | None] = [None] * len(hashes) if kwargs_list is None else kwargs_list
    if not all(k is None or isinstance(k, str) for k in kwargs):
        raise WireError("kwargs_data items must be base64 strings or null")
    if not (len(hashes) == len(placeholders) == len(kwargs)):
        raise WireError(
            f"misaligned features: {len(hashes)} hashes, {len(placeholders)} placeholders, "
            f"{len(kwargs)} kwargs_data items"
        )
    return GenerateRequest(model, token_ids, hashes, placeholders, kwargs)
