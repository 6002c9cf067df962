"""mmbench.measure.model.predict: the analytic model per mode (docs domain.md sections 1, 3, 6)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbench.config import PointConfig
from mmbench.measure.model import Prediction, item_objects, predict
from mmbench.measure.model.constants import CONSTANTS
from mmbench.measure.model.raw import evicted_slack_basis
from mmbench.world.geometry import get_geometry

MODES = ("full", "ephemeral", "hash-only", "ephemeral+hash-only")
EPHEMERAL = ("ephemeral", "ephemeral+hash-only")
SOURCE = 300_000.0  # mean encoded source bytes per image


def _predict(source: float = SOURCE, **kwargs: Any) -> Prediction:
    return predict(PointConfig(**kwargs), source)


def test_pixel_bytes_per_image_comes_from_the_geometry() -> None:
    assert _predict(image_size="512").pixel_bytes_per_image == 6_291_456
    assert _predict(image_size="1024").pixel_bytes_per_image == 25_165_824
    assert _predict(image_size="512", model="qwen2-vl").pixel_bytes_per_image == 6_096_384
    layout = get_geometry("qwen3-vl").layout(300, 200)
    assert _predict(image_size="300x200").pixel_bytes_per_image == layout.pixel_bytes(4)


@pytest.mark.parametrize(("k", "n", "m"), [(1, 1, 1), (4, 8, 1), (3, 5, 2)])
def test_full_pixel_part_is_k_n_m_images(k: int, n: int, m: int) -> None:
    p = _predict(mode="full", rollouts=k, turns=n, images_per_turn=m, image_size="512")
    assert p.pixel_bytes == k * n * m * 6_291_456
    assert p.source_bytes == int(k * n * m * SOURCE)
    assert p.renderer_cache_only_bytes == 0


@pytest.mark.parametrize("mode", EPHEMERAL)
@pytest.mark.parametrize(
    ("k", "n", "m", "pool", "cache"),
    [(4, 8, 1, 1, 32), (8, 8, 1, 1, 32), (2, 3, 2, 1, 32), (8, 8, 2, 4, 8), (4, 4, 1, 2, 0)],
)
def test_ephemeral_keeps_no_pixels_but_the_cache(
    mode: str, k: int, n: int, m: int, pool: int, cache: int
) -> None:
    p = _predict(mode=mode, rollouts=k, turns=n, images_per_turn=m, pool_size=pool, image_cache_max=cache)
    assert p.pixel_bytes == 0
    assert p.renderer_cache_only_bytes == min(pool * cache, k * n * m) * p.pixel_bytes_per_image
    assert p.source_bytes == int(k * n * m * SOURCE)


def test_ephemeral_cache_term_is_bounded_by_the_cache() -> None:
    # K*N*m = 64 images, but one renderer keeps 32 of them.
    small = _predict(mode="ephemeral", rollouts=8, turns=8, image_cache_max=32)
    assert small.renderer_cache_only_bytes == 32 * 6_291_456
    # Where the cache holds everything, the cache is as big as full mode's pixels.
    big = _predict(mode="ephemeral", rollouts=2, turns=4, image_cache_max=32)
    full = _predict(mode="full", rollouts=2, turns=4)
    assert big.renderer_cache_only_bytes == full.pixel_bytes


@pytest.mark.parametrize(("k", "n", "m"), [(1, 8, 1), (4, 8, 1), (3, 5, 2)])
def test_hash_only_retained_equals_full_up_to_descriptors(k: int, n: int, m: int) -> None:
    full = _predict(mode="full", rollouts=k, turns=n, images_per_turn=m)
    hash_only = _predict(mode="hash-only", rollouts=k, turns=n, images_per_turn=m)
    assert hash_only.pixel_bytes == full.pixel_bytes
    assert hash_only.source_bytes == full.source_bytes
    assert hash_only.other_bytes == full.other_bytes
    diff = hash_only.retained_bytes - full.retained_bytes
    assert diff == hash_only.descriptor_bytes - full.descriptor_bytes
    # the stripped copies: (N-1)*m item objects per rollout, each well under 1 KiB
    assert 0 <= diff <= k * (n - 1) * m * 1024
    assert diff < 1e-4 * full.retained_bytes


@pytest.mark.parametrize("codec", ["fast", "stdlib"])
@pytest.mark.parametrize(("k", "n", "m"), [(1, 8, 1), (4, 3, 2)])
def test_shipping_depends_only_on_hash_only(codec: str, k: int, n: int, m: int) -> None:
    shipped = {
        mode: _predict(mode=mode, rollouts=k, turns=n, images_per_turn=m, codec=codec).bytes_shipped
        for mode in MODES
    }
    assert shipped["full"] == shipped["ephemeral"]
    assert shipped["hash-only"] == shipped["ephemeral+hash-only"]
    if n > 1:
        assert shipped["hash-only"] < shipped["full"]


@pytest.mark.parametrize("codec", ["fast", "stdlib"])
def test_full_over_hash_only_shipped_is_half_n_plus_one(codec: str) -> None:
    n = 8
    full = _predict(mode="full", turns=n, image_size="256", codec=codec)
    hash_only = _predict(mode="hash-only", turns=n, image_size="256", codec=codec)
    ratio = full.bytes_shipped / hash_only.bytes_shipped
    assert ratio == pytest.approx((n + 1) / 2, rel=0.01)


def test_shipped_is_per_rollout_times_k() -> None:
    one = _predict(rollouts=1, turns=4)
    many = _predict(rollouts=7, turns=4)
    assert many.bytes_shipped_per_rollout == one.bytes_shipped_per_rollout
    assert many.bytes_shipped == 7 * one.bytes_shipped_per_rollout
    # each full item is its pixels in base64 (4/3), so shipping exceeds sum(n_t) * 4/3 * P
    items_sent = sum(range(1, 5))
    assert one.bytes_shipped > items_sent * 6_291_456 * 4 / 3


@pytest.mark.parametrize("mode", MODES)
def test_full_retained_is_linear_in_k(mode: str) -> None:
    retained = {
        k: _predict(mode=mode, rollouts=k, turns=4, image_size="256").retained_bytes for k in (4, 8, 12)
    }
    step1 = retained[8] - retained[4]
    step2 = retained[12] - retained[8]
    assert step1 > 0
    if mode in EPHEMERAL:
        # the cache (32 images) fills at K=8 (32 images), so the slope drops after it
        assert step2 < step1
    else:
        assert step2 == pytest.approx(step1, rel=0.001)


def test_full_retained_slope_is_the_per_rollout_bytes() -> None:
    r4 = _predict(mode="full", rollouts=4, turns=8).retained_bytes
    r8 = _predict(mode="full", rollouts=8, turns=8).retained_bytes
    per_rollout = (r8 - r4) / 4
    pixels_per_rollout = 8 * 6_291_456
    assert pixels_per_rollout < per_rollout < pixels_per_rollout * 1.02 + 8 * SOURCE + 200_000


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("full", lambda n, m: n * m),
        ("hash-only", lambda n, m: n * m + (n - 1) * m),
        ("ephemeral", lambda n, m: m * n * (n + 1) // 2),
        ("ephemeral+hash-only", lambda n, m: n * m),
    ],
)
@pytest.mark.parametrize(("n", "m"), [(1, 1), (8, 1), (5, 3)])
def test_item_objects_per_mode(mode: str, expected: Any, n: int, m: int) -> None:
    assert item_objects(mode, n, m) == expected(n, m)


def test_item_objects_known_values() -> None:
    assert item_objects("full", 8, 1) == 8
    assert item_objects("hash-only", 8, 1) == 15
    assert item_objects("ephemeral", 8, 1) == 36
    assert item_objects("ephemeral+hash-only", 8, 2) == 16


@pytest.mark.parametrize("mode", MODES)
def test_stdlib_codec_ships_more_than_fast(mode: str) -> None:
    fast = _predict(mode=mode, turns=4, codec="fast")
    stdlib = _predict(mode=mode, turns=4, codec="stdlib")
    assert stdlib.bytes_shipped > fast.bytes_shipped
    # the separator spaces: at least one per token id, at most a small fraction of the body
    tokens = sum(t * (32 + 256) + (t - 1) * 16 for t in range(1, 5))
    assert stdlib.bytes_shipped - fast.bytes_shipped >= tokens
    assert stdlib.bytes_shipped - fast.bytes_shipped < 0.01 * fast.bytes_shipped
    # the codec changes nothing retained
    assert stdlib.retained_bytes == fast.retained_bytes


def test_engine_cache_is_bounded_by_its_setting() -> None:
    unbounded = _predict(rollouts=4, turns=8, engine_cache_gb=4.0)
    assert unbounded.engine_cache_bytes >= 32 * 6_291_456
    bounded = _predict(rollouts=4, turns=8, engine_cache_gb=0.1)
    item = 6_291_456 + 24  # the pixels and the grid: what the engine's cache charges per item
    assert bounded.engine_cache_bytes == (int(0.1 * 1024**3) // item) * item
    assert _predict(engine_cache_gb=0).engine_cache_bytes == 0


@pytest.mark.parametrize("mode", ["raw", "raw-file"])
def test_raw_engine_without_a_cache_holds_the_last_requests_items_while_it_answers(mode: str) -> None:
    # measured (raw, K=8, N=8, 512x512, engine_cache_gb 0): engine peak 150 MiB, 109 predicted
    # before this term; the engine keeps every processed item of a request until it answers
    item = 6_291_456 + 24
    none = _predict(mode=mode, rollouts=8, turns=8, engine_cache_gb=0)
    one = _predict(mode=mode, rollouts=8, turns=8, engine_cache_gb=item / 1024**3)  # holds one item
    assert none.engine_cache_bytes == 0 and one.engine_cache_bytes == item
    # the cache's one item replaces one of the eight held in the request, and as it evicts, one
    # item's share of slack (the holes evicted items leave) comes on top
    slack = int(CONSTANTS.raw_engine_slack * item)
    assert abs(one.engine_peak_bytes - none.engine_peak_bytes - slack) <= 64
    full = _predict(mode=mode, rollouts=8, turns=8, engine_cache_gb=4.0)
    assert full.engine_peak_bytes - full.engine_cache_bytes == none.engine_peak_bytes - 8 * item


def test_raw_engine_slack_comes_once_its_cache_evicts_and_is_bounded_by_the_cache() -> None:
    item = 6_291_456 + 24
    assert evicted_slack_basis(100, 200 * item, item) == 0.0  # holds all it made: no hole
    assert evicted_slack_basis(250, 200 * item, item) == 50 * item  # 50 evicted
    assert evicted_slack_basis(5000, 200 * item, item) == 200 * item  # bounded by what it holds
    assert evicted_slack_basis(5000, 200 * 2**25, 2**25) == 0.0  # mmapped items leave no hole
    assert evicted_slack_basis(10, 0, item) == 0.0  # no cache
    # where the 4 GB cache fills (at 512x512, N=8: past ~80 rollouts), the step comes on top
    below = _predict(mode="raw", rollouts=64, turns=8, image_size="512")
    above = _predict(mode="raw", rollouts=96, turns=8, image_size="512")

    def held(p: Prediction) -> int:  # the engine's peak above its cache
        return p.engine_peak_bytes - p.engine_cache_bytes

    step = held(above) - held(below)
    assert step > 0.5 * CONSTANTS.raw_engine_slack * above.engine_cache_bytes


def test_peak_exceeds_retained() -> None:
    for mode in MODES:
        p = _predict(mode=mode, rollouts=4, turns=4)
        assert p.peak_bytes > p.retained_bytes


def test_to_dict_has_every_part() -> None:
    d = _predict().to_dict()
    assert d["retained_bytes"] == sum(
        d[k]
        for k in (
            "pixel_bytes",
            "source_bytes",
            "renderer_cache_only_bytes",
            "descriptor_bytes",
            "other_bytes",
        )
    )


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    model=st.sampled_from(["qwen3-vl", "qwen2-vl"]),
    k=st.integers(1, 16),
    n=st.integers(1, 10),
    m=st.integers(1, 3),
    width=st.integers(32, 640),
    height=st.integers(32, 640),
    pool=st.integers(1, 4),
    cache=st.integers(0, 40),
    source=st.floats(0, 2_000_000),
    codec=st.sampled_from(["fast", "stdlib"]),
    text=st.integers(0, 64),
    completion=st.integers(1, 32),
)
def test_random_configs_have_nonnegative_parts(
    mode: str,
    model: str,
    k: int,
    n: int,
    m: int,
    width: int,
    height: int,
    pool: int,
    cache: int,
    source: float,
    codec: str,
    text: int,
    completion: int,
) -> None:
    config = PointConfig(
        mode=mode,
        model=model,
        rollouts=k,
        turns=n,
        images_per_turn=m,
        image_size=f"{width}x{height}",
        pool_size=pool,
        image_cache_max=cache,
        codec=codec,
        text_tokens_per_turn=text,
        completion_tokens=completion,
    )
    p = predict(config, source)
    for name, value in p.to_dict().items():
        if name in ("fleet_misses", "router_retries", "failed_rollouts"):  # a fleet's: none for one engine
            assert value is None, name
            continue
        assert value >= 0, name
    assert p.pixel_bytes_per_image > 0
    assert p.retained_bytes >= p.pixel_bytes + p.source_bytes
    assert p.retained_bytes >= p.pixel_bytes + p.source_bytes + p.renderer_cache_only_bytes
    assert p.bytes_shipped > 0
    assert p.bytes_shipped == k * p.bytes_shipped_per_rollout
    if mode in EPHEMERAL:
        assert p.pixel_bytes == 0
    else:
        assert p.pixel_bytes == k * n * m * p.pixel_bytes_per_image
        assert p.renderer_cache_only_bytes == 0
