"""Extrapolation of preflight-refused points, and the preflight itself."""

from __future__ import annotations

from typing import Any

import pytest

from mmbench.analysis.extrapolate import extrapolate
from mmbench.config import PointConfig
from mmbench.measure import preflight as pf
from mmbench.results import PointRecord
from tests.helpers import flat_record

MIB = 1 << 20


def rec(k: int, status: str = "ok", repeat: int = 0, mode: str = "ephemeral", **fields: Any) -> PointRecord:
    base = PointConfig(mode=mode, rollouts=k, turns=8, image_size="1024").to_dict()
    return flat_record(**base, repeat=repeat, status=status, predicted_retained_bytes=100 * MIB * k, **fields)


def measured(k: int) -> PointRecord:
    # an exact line: 10 MiB intercept, 50 MiB per rollout
    live = 10 * MIB + 50 * MIB * k
    return rec(k, retained_live_bytes=live, retained_bytes=2 * live, peak_bytes=3 * live, bytes_shipped=7 * k)


def test_skipped_points_become_extrapolated_from_the_fit_past_the_cache_full_k() -> None:
    # K=1..3 lie below the cache-full K (32 images / 8 per rollout = 4): a wild value there must not count
    records = [rec(2, retained_live_bytes=999 * MIB), *(measured(k) for k in (4, 8, 12, 16))]
    records.append(rec(64, status="skipped", cause="predicted 80 GiB > available 20 GiB"))
    out = extrapolate(records)
    assert [r.status for r in out] == ["ok", "ok", "ok", "ok", "ok", "extrapolated"]
    x = out[-1]
    live = x.client.retained_live_bytes
    assert live == 10 * MIB + 50 * MIB * 64
    assert x.client.retained_bytes == 2 * live
    assert x.client.peak_bytes == 3 * live
    assert x.traffic.bytes_shipped == 7 * 64
    assert (
        x.cause is not None and "predicted 80 GiB" in x.cause and "extrapolated from K=4,8,12,16" in x.cause
    )
    assert x.prediction.retained_ratio == pytest.approx(live / (100 * MIB * 64))


def test_where_trajectories_hold_what_the_cache_holds_every_k_is_fitted() -> None:
    # full keeps every image's pixels in its trajectories: the cache adds nothing, K=2 counts
    records = [rec(2, mode="full", retained_live_bytes=999 * MIB), *(measured(k) for k in (4, 8))]
    records = [
        r if r.config.rollouts == 2 else rec(r.config.rollouts, mode="full", **_figures(r)) for r in records
    ]
    records.append(rec(64, "skipped", mode="full", cause="too big"))
    assert "extrapolated from K=2,4,8" in (extrapolate(records)[-1].cause or "")


def _figures(r: PointRecord) -> dict[str, Any]:
    c, t = r.client, r.traffic
    return {"retained_live_bytes": c.retained_live_bytes, "retained_bytes": c.retained_bytes,
            "peak_bytes": c.peak_bytes, "bytes_shipped": t.bytes_shipped}  # fmt: skip


def test_without_two_measured_k_a_skipped_point_stays_skipped() -> None:
    records = [measured(4), rec(64, status="skipped", cause="too big")]
    assert [r.status for r in extrapolate(records)] == ["ok", "skipped"]


def test_failed_points_are_not_used_and_not_replaced() -> None:
    records = [measured(4), measured(8), rec(12, status="failed", cause="worker killed by SIGKILL")]
    out = extrapolate(records)
    assert out[-1].status == "failed"


def test_preflight_refuses_what_cannot_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "available_bytes", lambda: 8 * 1024**3)
    small = pf.preflight(PointConfig(mode="full", rollouts=1, image_size="256"))
    assert small.fits
    huge = pf.preflight(PointConfig(mode="full", rollouts=256, image_size="2048"))
    assert not huge.fits
    assert huge.reason.startswith("predicted ") and "> available 8.0 GiB" in huge.reason
    # a bigger source can only make it worse
    assert (
        pf.preflight(PointConfig(mode="full", rollouts=1, image_size="256"), 1e6).need_bytes
        > small.need_bytes
    )


def test_preflight_counts_what_the_kept_engine_holds_as_the_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept engine's memory is the point's (it serves it, or is stopped for the one that does):
    counted as available, never as taken and needed at once; a budget still bounds the point."""
    monkeypatch.setattr(pf, "available_bytes", lambda: 1024**3)
    config = PointConfig(mode="full", rollouts=8, image_size="512")
    need = pf.preflight(config).need_bytes
    assert not pf.preflight(config).fits
    held = pf.preflight(config, held=need)
    assert held.fits and held.available_bytes == 1024**3 + need
    assert not pf.preflight(config, budget=1024**3, held=need).fits
