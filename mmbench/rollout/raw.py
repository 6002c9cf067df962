"""The raw-media turn's pieces: the image's URL, the engine's answer, and the correctness check.

In the raw modes the client runs no image processor, so it cannot compare the engine's checksums
with its own pixels during the run. Instead it records every (image, checksum) the engine
reports, and after the measured phase derives each distinct image's pixels once, as the engine
should have, and counts the mismatches (`wrong_results`). Expected checksums are kept beside the
sweep's source cache, so a sweep derives each image once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmbench.rollout.state import RolloutCounters, RolloutFailed
from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import Geometry
from mmbench.world.images import SourceStore
from mmbench.world.media import AssetStore, data_url
from mmbench.world.renderer import decode_image, process_image
from mmbench.world.sidecar import Placeholder
from mmbench.world.wire import MODALITY


def media_url(kind: str | None, source: bytes, fmt: str, assets: AssetStore | None) -> str:
    """The URL a message carries for this image: inline (`data`) or a reference (`file`)."""
    if kind == "data":
        return data_url(source, fmt)
    if kind == "file":
        if assets is None:
            raise ValueError("raw-file needs an asset directory shared with the engine")
        return assets.put(source, fmt)
    raise ValueError(f"unknown media kind {kind!r}")


VISION_CHUNK = "vision_chunk"


def read_answer(
    body: dict[str, Any], images: int, turn: int
) -> tuple[list[int], list[Placeholder], list[int]]:
    """The expanded prompt, each image's placeholder and checksum, from a raw-media answer; a
    malformed answer fails the rollout (as the released client raises on it)."""
    prompt = body.get("prompt_token_ids")
    spans = body.get("mm_placeholders")
    # mmbench's engine returns each image's pixel checksum; a vLLM none (the caller counts them unverified)
    checksums = body.get("item_checksums", [None] * images)
    # a model with one vision modality (vLLM's Kimi K2.5: vision_chunk) lists the images under it
    image_spans = (spans.get(MODALITY) or spans.get(VISION_CHUNK)) if isinstance(spans, dict) else None
    if not isinstance(prompt, list) or not isinstance(image_spans, list):
        raise RolloutFailed(f"turn {turn}: the engine's answer lacks prompt_token_ids or mm_placeholders")
    if len(image_spans) != images or not isinstance(checksums, list) or len(checksums) != images:
        raise RolloutFailed(f"turn {turn}: the engine's answer does not describe the {images} images sent")
    placeholders: list[Placeholder] = []
    for span in image_spans:
        offset, length = (span.get("offset"), span.get("length")) if isinstance(span, dict) else (None, None)
        if not (
            isinstance(offset, int)
            and isinstance(length, int)
            and 0 <= offset < offset + length <= len(prompt)
        ):
            raise RolloutFailed(f"turn {turn}: the engine's answer has a placeholder outside its prompt")
        placeholders.append(Placeholder(offset, length))
    return prompt, placeholders, checksums


def keep_checksums(c: RolloutCounters, body: dict[str, Any], checksums: list[Any]) -> None:
    """Keep the engine's checksum of every image for the check after the run; an engine that returns
    none (a vLLM) leaves these images unverified."""
    if "item_checksums" in body:
        c.media_checksums.extend(enumerate(int(x) for x in checksums))
    else:
        c.unverified += len(checksums)


def _expected(source: bytes, geometry: Geometry, dtype: str) -> int:
    pixels, _ = process_image(decode_image(source), geometry, dtype)
    return pixel_checksum(pixels)


def _cached_expected(store: SourceStore, key: tuple[int, int, int], geometry: Geometry, dtype: str) -> int:
    rollout, turn, index = key
    path: Path | None = None
    if store.dir is not None:
        path = store.dir / f"r{rollout}-t{turn}-i{index}.{geometry.name}.{dtype}.crc32"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            pass
    value = _expected(store.get(rollout, turn, index), geometry, dtype)
    if path is not None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(str(value))
        os.replace(tmp, path)
    return value


def count_wrong(
    checks: Iterable[tuple[int, int, int]], store: SourceStore, geometry: Geometry, dtype: str,
    images_per_turn: int,
) -> int:  # fmt: skip
    """Of (rollout, image index, engine checksum) reports, those whose pixels differ from what the
    engine should have derived from that image."""
    expected: dict[tuple[int, int, int], int] = {}
    wrong = 0
    for rollout, image, got in checks:
        key = (rollout, image // images_per_turn, image % images_per_turn)
        if key not in expected:
            expected[key] = _cached_expected(store, key, geometry, dtype)
        wrong += got != expected[key]
    return wrong
