"""The model of the raw-media modes (`raw`, `raw-file`).

The client runs no image processor and keeps no pixels: per rollout it holds each image as the
URL its message carries (a data: URL is 4/3 of the encoded source plus its prefix; a file:// URL a
hundred bytes), the token stream it renders (one `<|image_pad|>` per image), the expanded stream
the engine returns, and per step the engine's placeholders (one per image so far), completions
and logprobs.

Shipped: every turn's body carries every image's URL so far, so a rollout ships
sum_t t*m URLs, plus the rendered token ids and the JSON around them (measured on an empty body).

The engine preprocesses what its LRU-by-bytes cache does not hold: the lookups are simulated in
the order the driver sends them (turn by turn, every rollout's request of a turn before the next
turn), so the engine's preprocessing calls and cache hits are exact wherever the cache holds the
working set or nothing, and a close estimate in between.

Peaks: the client holds its live data, the request bodies in flight (one JSON text per body, and
asyncio's copy of what the socket has not taken) and the holes freed bodies leave (their text is
smaller than glibc's largest mmap threshold, so once the threshold has risen they come from a heap):
both grow with the K bodies of the last turn, calibrated as `Constants.raw_client` on measured raw
points. The engine holds its cache, the bodies it reads and decodes (`Constants.engine`, as in the
processed modes), one image's preprocessing temporaries, and every processed item of the request it
is answering until the answer is made (the cache holds the latest of them; the rest are alive only
in the request: a whole last-turn request's items with no cache).
"""

from __future__ import annotations

import math
import tempfile
from collections import OrderedDict
from pathlib import Path

from mmbench.config import PointConfig
from mmbench.facts import PointFacts
from mmbench.measure.model.constants import Constants
from mmbench.measure.model.parts import _PAD_TOKEN_CHARS, _SIZE, _TEXT_TOKEN_CHARS, _list_bytes
from mmbench.measure.model.peak import PeakInputs, _heap, dot, engine_peak
from mmbench.measure.model.prediction import Prediction
from mmbench.world.codec import b64_len, get_codec
from mmbench.world.media import data_url_prefix
from mmbench.world.wire import raw_request_object

STR_OVERHEAD = 49  # sys.getsizeof("") of an ASCII str: what a URL costs beyond its characters
# What a file:// URL of the harness's asset directory looks like (its length is what matters).
_ASSET_DIR = Path(tempfile.gettempdir()) / "mmbench-point-xxxxxxxx" / "assets"
_ASSET_NAME_CHARS = 32  # the blake2b-128 hex digest a stored asset is named by
_PREPROCESS_TEMPORARIES = 4.0  # float32 image, normalized copy, temporal repeat, patches


def url_length(facts: PointFacts, source_bytes_per_image: float) -> float:
    """Characters of one image's URL in this mode."""
    config = facts.config
    if facts.mode.media == "file":
        return len(f"file://{_ASSET_DIR}/") + _ASSET_NAME_CHARS + 1 + len(config.image_format)
    return len(data_url_prefix(config.image_format)) + b64_len(round(source_bytes_per_image))


def _body_sizes(config: PointConfig, url: float) -> list[float]:
    """The body of every turn of one rollout, in bytes."""
    codec = get_codec(config.codec)
    c, m, text_t = config.completion_tokens, config.images_per_turn, config.text_tokens_per_turn
    empty = len(codec.dumps(raw_request_object(config.model, [], [], c)))
    one = len(codec.dumps(raw_request_object(config.model, [], [""], c))) - empty
    two = len(codec.dumps(raw_request_object(config.model, [], ["", ""], c))) - empty
    spaced = codec.spaced  # json.dumps's default separates list elements with ", "
    bodies = []
    for t in range(1, config.turns + 1):
        parts = t * m
        text = t * text_t + (t - 1) * c
        tokens = text * _TEXT_TOKEN_CHARS + parts * _PAD_TOKEN_CHARS + ((text + parts) if spaced else 0)
        bodies.append(empty + tokens + one + (parts - 1) * (two - one) + parts * url)
    return bodies


def engine_preprocess_calls(config: PointConfig, item_bytes: int) -> tuple[int, int]:
    """(preprocessings, cache hits) of the engine's LRU-by-bytes cache in the driver's order."""
    capacity = config.engine_cache_bytes
    slots = capacity // item_bytes if item_bytes else 0
    cache: OrderedDict[tuple[int, int], None] = OrderedDict()
    misses = hits = 0
    m = config.images_per_turn
    for t in range(1, config.turns + 1):
        for r in range(config.rollouts):
            for image in range(t * m):
                key = (r, image)
                if key in cache:
                    cache.move_to_end(key)
                    hits += 1
                    continue
                misses += 1
                if slots:
                    cache[key] = None
                    while len(cache) > slots:
                        cache.popitem(last=False)
    return misses, hits


def raw_basis(k: int, last_turn_body: int, source_bytes_per_image: float) -> list[float]:
    """The raw modes' client peak above the live data is these, each times its coefficient
    (Constants.raw_client): a last-turn body, and one per doubling of K (the bodies alive at once
    grow with log2 K, as the processed modes' do), a source image per rollout (each rollout's image
    read, encoded or written as an asset while the others' are alive), and fixed bytes."""
    return [
        float(last_turn_body), math.log2(k) * last_turn_body, k * last_turn_body,
        k * source_bytes_per_image, 1.0,
    ]  # fmt: skip


def evicted_slack_basis(preprocess: int, cache_bytes: int, item_bytes: int) -> float:
    """The engine's slack once its cache evicts is this times its coefficient
    (Constants.raw_engine_slack): the bytes of the items it evicted, up to as many as it holds. An
    evicted item is freed on the engine's heap (below glibc's largest mmap threshold; a larger one
    is mmapped and leaves no hole), and the next misses' temporaries, of other sizes, take the holes
    apart: measured with a 4 GB cache full at 512x512, 576-803 MiB above the model without it,
    growing little with the evictions (1,123-2,820), so the term is bounded by the cache."""
    held = cache_bytes // item_bytes if item_bytes else 0
    evicted = max(0, preprocess - held)
    return float(min(evicted, held) * _heap(item_bytes))


def explain_raw(
    facts: PointFacts, source_bytes_per_image: float, constants: Constants
) -> tuple[Prediction, PeakInputs]:
    config, layout, pixel = facts.config, facts.layout, facts.pixel_bytes
    k, n, m, c = config.rollouts, config.turns, config.images_per_turn, config.completion_tokens
    images = n * m
    url = url_length(facts, source_bytes_per_image)

    s = _SIZE
    media = int(k * images * (url + STR_OVERHEAD))
    # per step: the engine's placeholders (one per image so far) in a list of their own
    placeholders = sum(_list_bytes(t * m) + t * m * s["placeholder"] for t in range(1, n + 1))
    expanded = n * (config.text_tokens_per_turn + m * layout.tokens + c)
    rendered = n * (config.text_tokens_per_turn + m + c)
    per_step_other = 72 + 2 * _list_bytes(c) + c * (s["int"] + s["float"])
    per_rollout_other = (
        int(8 * (expanded + rendered) * 1.07) + 160 + 2 * _list_bytes(images) + n * per_step_other
    )
    retained = media + k * (placeholders + per_rollout_other)

    bodies = _body_sizes(config, url)
    shipped_rollout = int(sum(bodies))
    item_bytes = facts.cache_item_bytes
    preprocess, hits = engine_preprocess_calls(config, item_bytes)
    engine_cache = min(k * images, config.engine_cache_bytes // item_bytes) * item_bytes
    inputs = PeakInputs(
        k=k, live=retained, largest_body=int(max(bodies)), last_turn_body=int(bodies[-1]),
        last_turn_full_items=0.0, item_text_float32=0, pixel_float32=layout.pixel_bytes(4),
        renders_in_flight=0, evicted=0.0, trims=False, slack_free=False, codec=config.codec,
    )  # fmt: skip
    basis = raw_basis(k, inputs.last_turn_body, source_bytes_per_image)
    client_peak = retained + int(dot(basis, constants.raw_client))
    # the items of the largest (last-turn) request that the cache does not hold while it is answered
    uncached = images - min(images, config.engine_cache_bytes // item_bytes)
    temporaries = int(_PREPROCESS_TEMPORARIES * inputs.pixel_float32) + uncached * item_bytes
    slack = int(constants.raw_engine_slack * evicted_slack_basis(preprocess, engine_cache, item_bytes))
    prediction = Prediction(
        retained_bytes=retained,
        pixel_bytes=0,
        source_bytes=media,
        renderer_cache_only_bytes=0,
        descriptor_bytes=k * placeholders,
        other_bytes=k * per_rollout_other,
        bytes_shipped=k * shipped_rollout,
        bytes_shipped_per_rollout=shipped_rollout,
        peak_bytes=client_peak,
        pixel_bytes_per_image=pixel,
        engine_cache_bytes=engine_cache,
        engine_peak_bytes=engine_peak(inputs, engine_cache, constants) + temporaries + slack,
        client_baseline_bytes=constants.client_baseline,
        engine_cache_hits=hits,
        engine_cache_misses=preprocess,
        requests=k * n,
        engine_preprocess_calls=preprocess,
    )
    return prediction, inputs
