"""The model and the client knobs: which predictions each knob changes (see the model's docstring)."""

from __future__ import annotations

from typing import Any

import pytest

from mmbench.config import PointConfig
from mmbench.measure.model import Prediction, predict

SOURCE = 300_000.0
MODES = ("full", "ephemeral", "hash-only", "ephemeral+hash-only")


def _predict(**kwargs: Any) -> Prediction:
    base: dict[str, Any] = {"rollouts": 8, "turns": 8, "image_size": "512"}
    return predict(PointConfig(**{**base, **kwargs}), SOURCE)


@pytest.mark.parametrize("mode", MODES)
def test_a_build_cap_lowers_only_the_peak(mode: str) -> None:
    free = _predict(mode=mode)
    one = _predict(mode=mode, max_inflight_builds=1)
    four = _predict(mode=mode, max_inflight_builds=4)
    assert one.peak_bytes < four.peak_bytes < free.peak_bytes
    for p in (one, four):
        assert p.retained_bytes == free.retained_bytes
        assert p.bytes_shipped == free.bytes_shipped
        assert p.engine_peak_bytes == free.engine_peak_bytes


def test_a_cap_at_or_above_k_is_no_cap() -> None:
    free = _predict(rollouts=4).peak_bytes
    assert _predict(rollouts=4, max_inflight_builds=4).peak_bytes == free
    assert _predict(rollouts=4, max_inflight_builds=64).peak_bytes == free


def test_a_cap_saves_per_build_not_per_waiting_body() -> None:
    # Each build above the cap is worth the same; the bodies waiting for the engine still grow with K.
    k8 = [_predict(max_inflight_builds=c).peak_bytes for c in (1, 2, 3)]
    assert k8[0] - k8[1] == pytest.approx(k8[1] - k8[2], abs=2)
    assert _predict(rollouts=16, max_inflight_builds=1).peak_bytes > k8[0]


@pytest.mark.parametrize("knob", [{"malloc_arena_max": 2}, {"malloc_mmap_threshold": 131072}])
@pytest.mark.parametrize("mode", MODES)
def test_malloc_knobs_change_no_prediction(mode: str, knob: dict[str, Any]) -> None:
    assert _predict(mode=mode, **knob) == _predict(mode=mode)


@pytest.mark.parametrize(
    ("mode", "policy"),
    [(m, "always") for m in MODES] + [("full", "auto"), ("ephemeral", "auto")],
)
def test_a_trim_lowers_only_the_peak(mode: str, policy: str) -> None:
    off = _predict(mode=mode)
    trimmed = _predict(mode=mode, trim_after_build=policy)
    assert trimmed.retained_bytes == off.retained_bytes
    assert trimmed.bytes_shipped == off.bytes_shipped
    # the allocator slack on retained goes (2.5 x retained -> 1 x retained)
    saved = off.peak_bytes - trimmed.peak_bytes
    assert saved == pytest.approx(1.5 * off.retained_bytes, rel=0.01)


def test_auto_trims_only_where_a_build_can_grow_rss_by_64_mib() -> None:
    # 256x256, 4 turns: the largest request is 4 x 1.5 MiB of pixels, a build ~22 MiB: auto never trims
    small = {"image_size": "256", "turns": 4, "rollouts": 4}
    assert _predict(trim_after_build="auto", **small) == _predict(**small)
    assert _predict(trim_after_build="always", **small).peak_bytes < _predict(**small).peak_bytes
    # hash-only at 512x512 ships one 6 MiB image a turn: auto does not trim either
    assert _predict(mode="hash-only", trim_after_build="auto") == _predict(mode="hash-only")


def test_the_model_auto_threshold_is_the_clients() -> None:
    from mmbench.measure import model
    from mmbench.rollout import driver as rollout

    assert model._TRIM_AUTO_GROWTH == rollout.TRIM_AUTO_GROWTH


def test_bfloat16_peak_keeps_the_float32_slack() -> None:
    f32 = _predict(mode="full")
    bf16 = _predict(mode="full", dtype="bfloat16")
    # the transient halves with the pixels; the allocator slack does not
    assert f32.peak_bytes / 2 < bf16.peak_bytes < f32.peak_bytes
