"""The analytic model: predicted retained bytes, bytes shipped and peak per mode.

Inputs: the geometry (pixel bytes per image), K rollouts, N turns, m images per turn, the mean
encoded source size, the renderer pool and cache sizes, and the codec. Everything else comes from
the data structures themselves (object sizes from sys.getsizeof, item wire bytes from the codec).

Retained (client, live data, per rollout; I = N*m images, n_t = t*m items in turn t's sidecar):
- pixels: full and hash-only keep each image's pixel_values once (I*P); the ephemeral modes none.
- sources: I*S, in every mode (the conversation keeps the encoded images).
- renderer caches: in the ephemeral modes the cache becomes the only holder of what it keeps:
  min(pool_size * image_cache_max, K*I) * P in total (exact for pool_size 1; for larger pools an
  upper bound, since a pool spreads the renders over its caches).
- descriptors: per step three lists of n_t entries, and the item objects each mode creates
  (full: I; hash-only: I + (N-1)*m stripped copies; ephemeral: sum of n_t; both: I).
- other: token stream (8 bytes a token), completions and logprobs.
Shipped per rollout: each request body is the empty request's JSON plus its token ids, per-item
hash/placeholder/null text, and each full item's base64 text. Full and ephemeral ship sum n_t full
items; the hash-only modes m per turn (when the engine cache serves every null slot).
Peak (a calibrated estimate, for preflight): retained with allocator slack, plus the transient
copies of the request bodies in flight: the torch.cat batch, its base64 text and the JSON body
(about 3.7 x the pixels of a request) for the request being built and the bodies waiting for the
engine. The engine's own peak (its cache plus a few bodies) is predicted beside it.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from mmbench.config import PointConfig
from mmbench.world.codec import get_codec, item_wire_bytes
from mmbench.world.geometry import get_geometry
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
# Peak = _RETAINED_SLACK x retained + _PEAK_FLOOR + (a + b K) x (pixels of the largest request).
# The copies of a request being built (torch.cat batch, base64 bytes and text, JSON body) are ~3.7 x
# its pixels; up to K finished bodies wait for the (serial) engine; the ephemeral modes also hold the
# re-derived pixels of the request. Calibrated on the 2-core reference machine (default scenario,
# 512x512, K=1..16, all modes): measured peaks fall 0-45 % below this, never above. It is the
# preflight's estimate, deliberately on the safe side.
_RETAINED_SLACK = 2.5
_PEAK_FLOOR = 64 * 1024**2
_TRANSIENT_BASE, _TRANSIENT_PER_K = 4.0, 2.2
_EPHEMERAL_BASE, _EPHEMERAL_PER_K = 5.0, 2.6
_ENGINE_FLOOR = 128 * 1024**2  # the engine process's own baseline


@dataclass(frozen=True, slots=True)
class Prediction:
    retained_bytes: int
    pixel_bytes: int
    source_bytes: int
    renderer_cache_only_bytes: int
    descriptor_bytes: int
    other_bytes: int
    bytes_shipped: int
    bytes_shipped_per_rollout: int
    peak_bytes: int
    pixel_bytes_per_image: int
    engine_cache_bytes: int
    engine_peak_bytes: int

    @property
    def system_peak_bytes(self) -> int:
        """What the point needs from the machine: the client's peak and the engine's."""
        return self.peak_bytes + self.engine_peak_bytes

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


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


def item_objects(mode: str, turns: int, m: int) -> int:
    """How many MMItem objects one rollout's steps hold, per mode (see the module doc)."""
    images = turns * m
    if mode == "full":
        return images
    if mode == "hash-only":
        return images + (turns - 1) * m
    if mode == "ephemeral":
        return m * turns * (turns + 1) // 2
    return images  # ephemeral+hash-only


def predict(config: PointConfig, source_bytes_per_image: float) -> Prediction:
    geometry = get_geometry(config.model)
    layout = geometry.layout(*config.image_wh)
    pixel = layout.pixel_bytes(4)
    k, n, m = config.rollouts, config.turns, config.images_per_turn
    images = n * m
    ephemeral = config.mode in ("ephemeral", "ephemeral+hash-only")
    hash_only = config.mode in ("hash-only", "ephemeral+hash-only")

    pixels = 0 if ephemeral else k * images * pixel
    sources = int(k * images * source_bytes_per_image)
    cache_only = min(config.pool_size * config.image_cache_max, k * images) * pixel if ephemeral else 0

    s = _SIZE
    per_rollout_desc = (
        sum(3 * _list_bytes(t * m) + s["sidecar"] for t in range(1, n + 1))
        + images * (s["hash"] + s["placeholder"] + s["grid"])
        + item_objects(config.mode, n, m) * s["item"]
    )
    tokens = n * (config.text_tokens_per_turn + m * layout.tokens + config.completion_tokens)
    c = config.completion_tokens
    per_step_other = 72 + 2 * _list_bytes(c) + c * (s["int"] + s["float"])
    per_rollout_other = int(8 * tokens * 1.07) + 80 + _list_bytes(images) + n * per_step_other
    descriptors = k * per_rollout_desc
    other = k * per_rollout_other
    retained = pixels + sources + cache_only + descriptors + other

    codec = get_codec(config.codec)
    wire = item_wire_bytes(layout.pixel_shape)
    empty = len(codec.dumps(request_object(config.model, [], [], [], [], c)))
    spaced = config.codec == "stdlib"  # json.dumps separates list elements with ", "
    shipped_rollout = 0
    largest_full = 0
    for t in range(1, n + 1):
        items = t * m
        full = m if hash_only else items
        largest_full = max(largest_full, full)
        text = t * config.text_tokens_per_turn + (t - 1) * c
        pads = t * m * layout.tokens
        elements = text + pads + 3 * items
        body = (
            empty
            + text * _TEXT_TOKEN_CHARS
            + pads * _PAD_TOKEN_CHARS
            + items * (_HASH_CHARS + _PLACEHOLDER_CHARS)
            + full * (wire + 1)
            + (items - full) * _NULL_CHARS
            + (elements if spaced else 0)
        )
        shipped_rollout += int(body)
    a, b = (_EPHEMERAL_BASE, _EPHEMERAL_PER_K) if ephemeral else (_TRANSIENT_BASE, _TRANSIENT_PER_K)
    transient = (a + b * k) * largest_full * pixel
    engine_working_set = k * images * (pixel + 24)
    engine_cache = min(engine_working_set, config.engine_cache_bytes)
    # The engine holds its cache plus a few copies of the largest body it is decoding.
    engine_peak = _ENGINE_FLOOR + engine_cache + 3 * largest_full * wire
    return Prediction(
        retained_bytes=int(retained),
        pixel_bytes=pixels,
        source_bytes=sources,
        renderer_cache_only_bytes=cache_only,
        descriptor_bytes=descriptors,
        other_bytes=other,
        bytes_shipped=k * shipped_rollout,
        bytes_shipped_per_rollout=shipped_rollout,
        peak_bytes=int(_RETAINED_SLACK * retained + _PEAK_FLOOR + transient),
        pixel_bytes_per_image=pixel,
        engine_cache_bytes=engine_cache,
        engine_peak_bytes=int(engine_peak),
    )
