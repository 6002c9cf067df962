"""Exact sizes from the data structures themselves: the descriptors and token streams a rollout
keeps (sys.getsizeof of the real objects) and the bytes of one request body (the codec's own
output for an empty request, plus what each token id, hash, placeholder and item adds)."""

from __future__ import annotations

import sys
from functools import partial

import numpy as np

from mmbench.config import PointConfig
from mmbench.facts import Mode, mode_of
from mmbench.world.codec import get_codec, item_wire_bytes
from mmbench.world.geometry import ImageLayout, grid_key
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from mmbench.world.wire import request_object

# Expected JSON characters per uniformly drawn token id in [0, 150000), comma included.
_TEXT_TOKEN_CHARS = (
    1 + sum((min(10**d, 150_000) - (10 ** (d - 1) if d > 1 else 0)) * d for d in range(1, 7)) / 150_000
)
_PAD_TOKEN_CHARS = 7  # "151655,"
_HASH_CHARS = 35  # "<32 hex>",
_PLACEHOLDER_CHARS = 31  # {"offset":12345,"length":256},
_NULL_CHARS = 5  # null,


def _sizes() -> dict[str, int]:
    grid = np.zeros((1, 3), dtype=np.int64)
    return {
        "item": sys.getsizeof(MMItem(grid, 0, None)),
        "grid": sys.getsizeof(grid),
        "hash": sys.getsizeof("0" * 32),
        "placeholder": sys.getsizeof(Placeholder(0, 1)),
        "sidecar": sys.getsizeof(MultiModalData()),
        "int": sys.getsizeof(100_000),
        "float": sys.getsizeof(-1.5),
        "empty_list": sys.getsizeof([]),
    }


_SIZE = _sizes()


def _list_bytes(n: int) -> int:
    return _SIZE["empty_list"] + 8 * n


def item_objects(mode: str | Mode, turns: int, m: int) -> int:
    """How many MMItem objects one rollout's steps hold: full keeps the renderer's items; hash-only
    also a stripped copy of each turn's previous new items; ephemeral a descriptor of every item of
    every step; ephemeral+hash-only one descriptor per image."""
    b = mode_of(mode) if isinstance(mode, str) else mode
    images = turns * m
    if b.stores_pixels:
        return images + (turns - 1) * m if b.needs_engine_cache else images
    return images if b.needs_engine_cache else m * turns * (turns + 1) // 2


def descriptor_bytes_per_rollout(config: PointConfig, mode: Mode) -> int:
    """Per step three lists of the t*m items so far and the sidecar; per image its hash,
    placeholder and grid; and the item objects the mode creates."""
    s, n, m = _SIZE, config.turns, config.images_per_turn
    return (
        sum(3 * _list_bytes(t * m) + s["sidecar"] for t in range(1, n + 1))
        + n * m * (s["hash"] + s["placeholder"] + s["grid"])
        + item_objects(mode, n, m) * s["item"]
    )


def other_bytes_per_rollout(config: PointConfig, layout: ImageLayout) -> int:
    """The token stream (8 bytes a token, with the array's growth), completions and logprobs."""
    s, n, m, c = _SIZE, config.turns, config.images_per_turn, config.completion_tokens
    tokens = n * (config.text_tokens_per_turn + m * layout.placeholder_tokens + c)
    per_step = 72 + 2 * _list_bytes(c) + c * (s["int"] + s["float"])
    return int(8 * tokens * 1.07) + 80 + _list_bytes(n * m) + n * per_step


class BodySize:
    """Bytes of one request body of this point, by turn and item counts."""

    def __init__(self, config: PointConfig, layout: ImageLayout, itemsize: int) -> None:
        codec = get_codec(config.codec)
        self.config = config
        self.layout = layout
        # one full item's text, given how many full items its request carries (vLLM's items list them all)
        self.item_text = partial(
            item_wire_bytes, layout.pixel_shape, itemsize, config.dtype, config.codec,
            grid_key=grid_key(config.model),
        )  # fmt: skip
        self.wire = self.item_text(1)
        c = config.completion_tokens
        self.empty = len(codec.dumps(request_object(config.model, [], [], [], [], c)))
        self.spaced = codec.spaced  # json.dumps's default separates list elements with ", "

    def __call__(self, turn: int, items: int, full: int) -> int:
        """Turn `turn` (1-based) carries `items` images, `full` of them in full, the rest null."""
        cfg = self.config
        text = turn * cfg.text_tokens_per_turn + (turn - 1) * cfg.completion_tokens
        pads = items * self.layout.placeholder_tokens  # Kimi: one per image
        elements = text + pads + 3 * items
        body = (
            self.empty
            + text * _TEXT_TOKEN_CHARS
            + pads * _PAD_TOKEN_CHARS
            + items * (_HASH_CHARS + _PLACEHOLDER_CHARS)
            + (full * (self.item_text(full) + 1) if full else 0)
            + (items - full) * _NULL_CHARS
            + (elements if self.spaced else 0)
        )
        return int(body)
