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
(about 3.7 x the pixels of a request) for the requests being built and the bodies waiting for the
engine. The engine's own peak (its cache plus a few bodies) is predicted beside it.

The knobs real clients turn (measured with scenarios/knobs.toml; README "Knobs"):
- dtype: P is the pixel bytes at the dtype's item size (bfloat16: 2), in every term: retained
  pixels and renderer caches, each full item's wire bytes, the engine cache and the transient. The
  peak's allocator slack still counts float32 pixels, since the renderer casts after making them.
- max_inflight_builds: the builds in flight in the peak are min(K, cap) instead of K. A build weighs
  little against the bodies waiting for the engine (measured: a cap of 1 left the peak within its
  run-to-run spread on 2 cores), so the cap lowers the prediction only a little.
- trim_after_build: the model predicts live retained bytes, which a trim does not change. It lowers
  the raw retained and the peak (measured: 35-55 % lower peaks at K = 4..16): where it trims
  (always; auto where the largest build can grow RSS by 64 MiB), the peak's allocator slack on
  retained drops from 2.5 to 1.0. auto never trims at small sizes, and then changes nothing.
- malloc_arena_max, malloc_mmap_threshold: no prediction changes. They move what the allocator
  keeps (raw minus live), which the model does not predict, and the peak: a fixed mmap threshold
  lowered it 20-35 %, but a smaller slack would leave too thin a margin (peaks to 95 % of it).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from mmbench.config import PointConfig
from mmbench.transports.registry import TRANSPORTS
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
# Peak = slack x retained + _PEAK_FLOOR
#        + (a + _PER_BUILD x builds in flight + w x K) x (pixels of the largest request),
# builds in flight = min(K, max_inflight_builds), or K without a cap. The copies of a request being
# built (torch.cat batch, base64 text, JSON body) are ~3.7 x its pixels, but builds are short and run
# on threads that mostly take turns (orjson holds the GIL), so they seldom overlap: most of the
# transient is the K finished bodies waiting for the (serial) engine, each held twice on Python 3.11
# (the body and asyncio's write-buffer copy of what the socket has not taken yet). The ephemeral modes
# also hold the re-derived pixels of each request until its reply. Calibrated on the 2-core reference
# machine (512x512, N=8, full and ephemeral, K = 4..16, max_inflight_builds 0, 1 and 4; every knob of
# scenarios/knobs.toml; the ci baseline): measured peaks fall 4-62 % below this, never above. It is
# the preflight's estimate, deliberately on the safe side. Measured there, a cap of 1 did not lower
# the peak beyond the run-to-run spread (the waiting bodies dominate), so a build counts little.
_RETAINED_SLACK = 2.5
# With trim_after_build the freed holes go back to the kernel after every build that trims, so the
# retained part of the peak is the live data itself (measured: full, ephemeral and hash-only, K =
# 4..16, peaks 34-65 % below the untrimmed prediction, 18-61 % below this one).
_TRIMMED_SLACK = 1.0
# trim_after_build=auto trims when a build grew RSS by this much (as mmbench.world.rollout does); a
# build grows it by about _BUILD_COPIES x its pixels, so auto trims only where that reaches it.
_TRIM_AUTO_GROWTH = 64 * 1024**2
_BUILD_COPIES = 3.7
_PEAK_FLOOR = 64 * 1024**2
_PER_BUILD = 0.5
_TRANSIENT_BASE, _TRANSIENT_PER_K = 6.0, 3.0
_EPHEMERAL_BASE, _EPHEMERAL_PER_K = 7.0, 3.0
_ENGINE_FLOOR = 128 * 1024**2  # the engine process's own baseline
PIXEL_ITEMSIZE = {"float32": 4, "bfloat16": 2}  # bytes per pixel_values element, per dtype


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
    # images the engine preprocesses: none where the client ships processed items
    engine_preprocess_calls: int = 0

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


def trims(config: PointConfig, largest_request_pixel_bytes: int) -> bool:
    """Whether trim_after_build trims the largest builds of this point (auto: only when a build can
    grow RSS by _TRIM_AUTO_GROWTH; never at small sizes)."""
    policy = config.trim_after_build
    return policy == "always" or (
        policy == "auto" and _BUILD_COPIES * largest_request_pixel_bytes >= _TRIM_AUTO_GROWTH
    )


def predict(config: PointConfig, source_bytes_per_image: float) -> Prediction:
    if not TRANSPORTS[config.mode].renders:
        # the raw-media modes: a model of their own (imported here: it builds on this module)
        from mmbench.measure.model_raw import predict_raw

        return predict_raw(config, source_bytes_per_image)
    geometry = get_geometry(config.model)
    layout = geometry.layout(*config.image_wh)
    itemsize = PIXEL_ITEMSIZE[config.dtype]
    pixel = layout.pixel_bytes(itemsize)
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
    wire = item_wire_bytes(layout.pixel_shape, itemsize, config.dtype)
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
    a, w = (_EPHEMERAL_BASE, _EPHEMERAL_PER_K) if ephemeral else (_TRANSIENT_BASE, _TRANSIENT_PER_K)
    cap = config.max_inflight_builds
    builds = min(k, cap) if cap > 0 else k
    transient = (a + _PER_BUILD * builds + w * k) * largest_full * pixel
    # The renderer makes float32 pixels before a bfloat16 cast: its temporaries, and the heap holes
    # they leave between the kept arrays, are float32-sized, so the slack counts float32 pixels.
    slack_base = retained + (pixels + cache_only) * (4 - itemsize) // itemsize
    slack = _TRIMMED_SLACK if trims(config, largest_full * pixel) else _RETAINED_SLACK
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
        peak_bytes=int(slack * slack_base + _PEAK_FLOOR + transient),
        pixel_bytes_per_image=pixel,
        engine_cache_bytes=engine_cache,
        engine_peak_bytes=int(engine_peak),
    )
