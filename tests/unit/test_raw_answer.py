"""A raw-media answer's placeholders: under `image`, or under vLLM's one vision modality for Kimi
K2.5 (`vision_chunk`, with use_unified_vision_chunk), where vLLM expands each <|media_pad|>."""

from __future__ import annotations

import pytest

from mmbench.rollout.raw import read_answer
from mmbench.rollout.state import RolloutFailed
from mmbench.world.sidecar import Placeholder


@pytest.mark.parametrize("modality", ["image", "vision_chunk"])
def test_placeholders_under_either_modality(modality: str) -> None:
    body = {"prompt_token_ids": list(range(20)), "mm_placeholders": {modality: [{"offset": 2, "length": 9}]}}
    prompt, placeholders, checksums = read_answer(body, 1, 1)
    assert prompt == list(range(20)) and placeholders == [Placeholder(2, 9)] and checksums == [None]


def test_an_answer_without_placeholders_fails_the_rollout() -> None:
    with pytest.raises(RolloutFailed, match="lacks prompt_token_ids or mm_placeholders"):
        read_answer({"prompt_token_ids": [1], "mm_placeholders": {"video": []}}, 1, 1)
