"""mmbench.measure.model.calibration: the solvers, and the fit's promise that its peaks cover every
measured one, per codec apart."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmbench.measure.model import explain
from mmbench.measure.model.calibration import Point, _above_noise, fit, main, minimax, nnls
from mmbench.measure.model.constants import CONSTANTS
from mmbench.measure.model.peak import client_parts
from mmbench.results import PointRecord, load
from mmbench.units import MIB

GOLDEN = Path(__file__).parents[1] / "golden" / "results_schema_v4.json"


def test_nnls_solves_a_consistent_system_and_keeps_every_coefficient_non_negative() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert np.allclose(nnls(a, a @ np.array([2.0, 3.0])), [2.0, 3.0])
    x = nnls(a, np.array([-1.0, 2.0, 1.0]))  # the unconstrained answer has a negative part
    assert (x >= 0).all() and x[0] == 0.0


def test_minimax_makes_the_largest_residual_smaller_than_least_squares() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, size=(30, 2))
    b = a @ np.array([1.0, 2.0]) + rng.normal(0, 0.1, size=30)
    b[0] += 3.0  # one outlier: least squares spreads it, minimax bounds it
    lsq = np.linalg.lstsq(a, b, rcond=None)[0]
    mm = minimax(a, b)
    assert (mm >= 0).all()
    assert np.abs(a @ mm - b).max() < np.abs(a @ lsq - b).max()


def _base(tmp: Path) -> PointRecord:
    """The golden file's measured point, to vary."""
    shutil.copy(GOLDEN, tmp / "results.json")
    return next(p for p in load(tmp).points if p.ok)


def _points(base: PointRecord, codec: str, transient_share: float) -> list[Point]:
    """Points whose measured peaks are the model's live data and slack plus this share of its
    transient, over modes and K, on one codec."""
    out = []
    for mode in ("full", "ephemeral", "hash-only"):
        for k in (2, 4, 8):
            record = replace(base, mode=mode, rollouts=k, turns=8, image_size="512", codec=codec)
            pred, inputs = explain(record.config, record.source_bytes_per_image or 0.0, CONSTANTS)
            parts = client_parts(inputs, replace(CONSTANTS, codec_peak=()))
            peak = parts["live"] + parts["slack"] + int(transient_share * parts["transient"])
            engine = pred.engine_peak_bytes
            out.append(Point("synthetic", replace(record, peak_bytes=peak, engine_peak_rss_bytes=engine)))
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
        (p.record.peak_bytes or 0) / explain(p.record.config, p.per_image, fitted)[0].peak_bytes
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
