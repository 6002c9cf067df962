"""The model and the client knobs: which predictions each knob changes (see mmbench.measure.model.peak)."""

from __future__ import annotations

from typing import Any

import pytest

from mmbench.config import PointConfig
from mmbench.measure.model import Prediction, explain, predict
from mmbench.measure.model.constants import CONSTANTS
from mmbench.measure.model.peak import client_parts

SOURCE = 300_000.0
MODES = ("full", "ephemeral", "hash-only", "ephemeral+hash-only")


def _config(**kwargs: Any) -> PointConfig:
    base: dict[str, Any] = {"rollouts": 8, "turns": 8, "image_size": "512"}
    return PointConfig(**{**base, **kwargs})


def _predict(**kwargs: Any) -> Prediction:
    return predict(_config(**kwargs), SOURCE)


def _parts(**kwargs: Any) -> dict[str, int]:
    return client_parts(explain(_config(**kwargs), SOURCE)[1], CONSTANTS)


@pytest.mark.parametrize("mode", MODES)
def test_knobs_measured_to_move_nothing_beyond_the_spread_change_no_prediction(mode: str) -> None:
    # measured (scenarios/knobs.toml): 2 arenas left the peak within its run-to-run spread; the
    # model does not pretend to know better
    assert _predict(mode=mode, malloc_arena_max=2) == _predict(mode=mode)


@pytest.mark.parametrize("cap", [1, 4])
@pytest.mark.parametrize("mode", MODES)
def test_a_build_cap_changes_only_the_order_of_the_driver(mode: str, cap: int) -> None:
    # measured (scenarios/knobs.toml): a build cap of 1 or 4 left the peak within its run-to-run
    # spread; the simulated driver builds at most `cap` bodies at once, which may move which renders
    # hit a cache, not what is retained or shipped
    capped, free = _predict(mode=mode, max_inflight_builds=cap), _predict(mode=mode)
    assert capped.retained_bytes == free.retained_bytes
    assert capped.bytes_shipped == free.bytes_shipped
    assert capped.peak_bytes == pytest.approx(free.peak_bytes, rel=0.01)


@pytest.mark.parametrize("mode", MODES)
def test_a_fixed_mmap_threshold_below_the_pixels_removes_only_the_slack(mode: str) -> None:
    dynamic = _parts(mode=mode)
    fixed = _parts(mode=mode, malloc_mmap_threshold=131072)
    assert dynamic["slack"] > 0
    assert fixed["slack"] == 0
    assert fixed["live"] == dynamic["live"] and fixed["transient"] == dynamic["transient"]
    f, d = _predict(mode=mode, malloc_mmap_threshold=131072), _predict(mode=mode)
    assert f.retained_bytes == d.retained_bytes and f.bytes_shipped == d.bytes_shipped
    assert f.peak_bytes == d.peak_bytes - dynamic["slack"]


def test_a_mmap_threshold_above_the_pixels_leaves_them_on_the_heap() -> None:
    # 256x256: 1.5 MiB of pixels; a 2 MiB threshold does not mmap them, so the slack stays
    assert _parts(image_size="256", malloc_mmap_threshold=2 * 1024**2)["slack"] > 0


@pytest.mark.parametrize(
    ("mode", "policy"),
    [(m, "always") for m in MODES] + [("full", "auto"), ("ephemeral", "auto")],
)
def test_a_trim_lowers_only_the_peak(mode: str, policy: str) -> None:
    off = _predict(mode=mode)
    trimmed = _predict(mode=mode, trim_after_build=policy)
    assert trimmed.retained_bytes == off.retained_bytes
    assert trimmed.bytes_shipped == off.bytes_shipped
    # the slack and the transient shrink by trim_factor; the live data stays
    before, after = _parts(mode=mode), _parts(mode=mode, trim_after_build=policy)
    assert after["live"] == before["live"]
    for part in ("slack", "transient"):
        assert after[part] == pytest.approx(CONSTANTS.trim_factor * before[part], abs=1)
    assert trimmed.peak_bytes < off.peak_bytes


def test_auto_trims_only_where_a_build_can_grow_rss_by_64_mib() -> None:
    # 256x256, 4 turns: the largest request is 4 x 1.5 MiB of pixels, a build ~22 MiB: auto never trims
    small = {"image_size": "256", "turns": 4, "rollouts": 4}
    assert _predict(trim_after_build="auto", **small) == _predict(**small)
    assert _predict(trim_after_build="always", **small).peak_bytes < _predict(**small).peak_bytes
    # hash-only at 512x512 ships one 6 MiB image a turn: auto does not trim either
    assert _predict(mode="hash-only", trim_after_build="auto") == _predict(mode="hash-only")


def test_the_model_auto_threshold_is_the_clients() -> None:
    from mmbench.measure.model import peak
    from mmbench.rollout import driver as rollout

    assert peak.TRIM_AUTO_GROWTH == rollout.TRIM_AUTO_GROWTH


def test_bfloat16_halves_what_ships_but_not_the_slack() -> None:
    f32, bf16 = _parts(mode="full"), _parts(mode="full", dtype="bfloat16")
    # the renderer makes float32 pixels before the cast: the holes they leave are float32-sized
    assert bf16["slack"] == pytest.approx(f32["slack"], rel=1e-6)
    assert bf16["transient"] < f32["transient"]
    assert _predict(mode="full", dtype="bfloat16").bytes_shipped < 0.51 * _predict(mode="full").bytes_shipped
