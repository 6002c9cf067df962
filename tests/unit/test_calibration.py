"""mmbench.measure.model.calibration: the solvers, and the fit's promise that its peaks cover every
measured one, per codec apart."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmbench.measure.model import explain
from mmbench.measure.model.calibration import Point, _above_noise, _fit_typical, fit, main, tightest_bound
from mmbench.measure.model.constants import CONSTANTS
from mmbench.measure.model.peak import client_parts
from mmbench.results import PointRecord, load
from mmbench.units import MIB

GOLDEN = Path(__file__).parents[1] / "golden" / "results_schema_v4.json"


def test_the_tightest_bound_covers_every_point_and_is_tighter_than_a_scaled_least_squares_fit() -> None:
    rng = np.random.default_rng(0)
    basis = rng.uniform(0.5, 2.0, size=(40, 3)) * 1e8
    target = basis @ np.array([1.0, 2.0, 0.0]) * rng.uniform(0.8, 1.2, size=40)
    peaks = target * 1.5
    x = tightest_bound(basis, target, peaks)
    assert (x >= 0).all()
    assert (basis @ x >= target * (1 - 1e-9)).all()  # an upper bound of every point
    lsq = np.linalg.lstsq(basis, target, rcond=None)[0]
    scaled = lsq * max(target / (basis @ lsq))  # least squares, then scaled to cover every point
    assert ((basis @ x) / peaks).sum() < ((basis @ scaled) / peaks).sum()


def _base(tmp: Path) -> PointRecord:
    """The golden file's measured point, to vary."""
    shutil.copy(GOLDEN, tmp / "results.json")
    return next(p for p in load(tmp).points if p.ok)


def _vary(base: PointRecord, **config: object) -> PointRecord:
    return replace(base, config=replace(base.config, **config))  # type: ignore[arg-type]


def _peaks(record: PointRecord, client: int, engine: int | None) -> PointRecord:
    """The record with these measured peaks: the client's (above its baseline) and the engine's."""
    figures = replace(record.engine.figures, peak_rss_bytes=engine)
    return replace(
        record,
        client=replace(record.client, peak_bytes=client),
        engine=replace(record.engine, figures=figures),
    )


def _points(base: PointRecord, codec: str, transient_share: float) -> list[Point]:
    """Points whose measured peaks are the model's live data and slack plus this share of its
    transient, over modes and K, on one codec."""
    out = []
    for mode in ("full", "ephemeral", "hash-only"):
        for k in (2, 4, 8):
            record = _vary(base, mode=mode, rollouts=k, turns=8, image_size="512", codec=codec)
            pred, inputs = explain(record.config, record.prediction.source_bytes_per_image or 0.0, CONSTANTS)
            parts = client_parts(inputs, replace(CONSTANTS, codec_peak=()))
            peak = parts["live"] + parts["slack"] + int(transient_share * parts["transient"])
            engine = pred.engine_peak_bytes
            out.append(Point("synthetic", _peaks(record, peak, engine)))
    return out


def test_the_fitted_peaks_cover_every_measured_peak_and_the_slower_codec_gets_its_own_factor(
    tmp_path: Path,
) -> None:
    base = _base(tmp_path)
    fast, vllm = _points(base, "fast", 1.0), _points(base, "vllm", 0.5)
    fitted = fit(fast + vllm)
    client, _ = fitted.codec_factors("vllm")
    assert fitted.codec_factors("fast") == (1.0, 1.0)
    assert 0.3 < client < 0.8  # the vllm points' transient is half of fast's
    ratios = [
        (p.record.client.peak_bytes or 0) / explain(p.record.config, p.per_image, fitted)[0].peak_bytes
        for p in fast + vllm
    ]
    assert max(ratios) == pytest.approx(1.0, abs=1e-6)  # an upper bound, reached
    assert min(ratios) > 0.5


def test_the_calibration_command_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("mmbench: error:")


def test_retained_ratios_under_the_rss_noise_floor_are_left_out() -> None:
    assert _above_noise(0.3 * MIB, 0.8 * MIB) is None  # raw-file: under 1 MiB either side
    assert _above_noise(None, 100 * MIB) is None
    assert _above_noise(99 * MIB, 100 * MIB) == pytest.approx(0.99)


def test_the_typical_shares_are_the_medians_of_what_points_reached_of_their_bounds(tmp_path: Path) -> None:
    base = _base(tmp_path)
    points = []
    for share, k in ((0.5, 2), (0.7, 4), (0.9, 8)):
        record = _vary(base, mode="full", rollouts=k, turns=8, image_size="512", codec="fast")
        pred = explain(record.config, record.prediction.source_bytes_per_image or 0.0, CONSTANTS)[0]
        peak = pred.retained_bytes + int(share * (pred.peak_bytes - pred.retained_bytes))
        points.append(Point("synthetic", _peaks(record, peak, None)))
    raw = _vary(base, mode="raw", rollouts=4, turns=8, image_size="512", codec="fast")
    pred = explain(raw.config, raw.prediction.source_bytes_per_image or 0.0, CONSTANTS)[0]
    raw_peak = pred.retained_bytes + int(0.2 * (pred.peak_bytes - pred.retained_bytes))
    points.append(Point("synthetic", _peaks(raw, raw_peak, None)))
    processed, raw_shares = _fit_typical(points, CONSTANTS)
    assert processed[0] == pytest.approx(0.7, abs=1e-6)  # the raw point does not move it
    assert processed[1:] == CONSTANTS.typical[1:]  # no engine figures: kept
    assert raw_shares[0] == pytest.approx(0.2, abs=1e-3) and raw_shares[1] == CONSTANTS.typical_raw[1]
