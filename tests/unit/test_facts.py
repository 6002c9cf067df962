"""A point's facts (mmbench.facts) and one turn's state (mmbench.rollout.turn), on hand-built inputs."""

from __future__ import annotations

import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.facts import GRID_BYTES, facts_of, mode_of
from mmbench.rollout.state import Conversation, RolloutCounters
from mmbench.rollout.turn import Rendered, Session, Turn
from mmbench.transports.base import Ship
from mmbench.transports.registry import TRANSPORTS
from mmbench.world.sidecar import MultiModalData


def test_facts_of_a_512_point_match_the_domain_table() -> None:
    f = facts_of(PointConfig(image_size="512", dtype="bfloat16", engine_cache_gb=0.05))
    assert (f.geometry.name, f.layout.grid_thw, f.layout.tokens) == ("qwen3-vl", (1, 32, 32), 256)
    assert (f.itemsize, f.pixel_bytes) == (2, 1024 * 1536 * 2)
    assert f.cache_item_bytes == f.pixel_bytes + GRID_BYTES
    assert f.engine_cache_items == int(0.05 * 1024**3) // f.cache_item_bytes


def test_an_engine_cache_smaller_than_one_item_holds_none() -> None:
    assert facts_of(PointConfig(image_size="1024", engine_cache_gb=0.01)).engine_cache_items == 0


def test_the_longest_request_counts_every_turn_and_image() -> None:
    c = PointConfig(
        turns=3, images_per_turn=2, image_size="512", text_tokens_per_turn=10, completion_tokens=4
    )
    assert facts_of(c).longest_request_tokens == 3 * 10 + 2 * 4 + 3 * 2 * 256 + 4


def test_facts_are_made_once_per_point() -> None:
    assert facts_of(PointConfig(rollouts=3)) is facts_of(PointConfig(rollouts=3))


@pytest.mark.parametrize("name", list(TRANSPORTS))
def test_a_mode_is_its_transport(name: str) -> None:
    assert mode_of(name) is TRANSPORTS[name] is facts_of(PointConfig(mode=name)).mode


def test_an_unknown_mode_is_one_line_with_the_valid_ones() -> None:
    with pytest.raises(MmbenchError, match=r"unknown mode 'nope'; choose one of: full"):
        mode_of("nope")


def test_a_turn_counts_every_attempt_and_what_followed_the_first_as_extra() -> None:
    c = RolloutCounters()
    turn = Turn(Session(None, "http://x"), 0, 0, Conversation(), None, c)  # type: ignore[arg-type]
    turn.count_attempt(100, [Ship.PIXELS, Ship.NULL])
    turn.count_attempt(150, [Ship.PIXELS, Ship.PIXELS])
    assert (turn.sent_bytes, c.bytes_shipped, c.extra_bytes, c.requests) == (250, 250, 150, 2)
    assert (c.full_items_sent, c.null_items_sent, c.media_items_sent) == (3, 1, 0)
    assert turn.number == 1


def test_a_rendered_prompt_is_a_list_for_the_body() -> None:
    conv = Conversation()
    conv.tokens.extend([1, 2, 3])
    assert Rendered(MultiModalData(), conv.tokens).prompt() == [1, 2, 3]
    assert Rendered(MultiModalData(), [4, 5]).prompt() == [4, 5]
