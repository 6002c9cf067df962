"""Fit the model's calibrated constants to measured results, and show how the model compares.

    python -m mmbench.measure.model.calibration RESULTS_DIR [RESULTS_DIR ...]

reads every measured point of the results directories, fits the constants of
mmbench.measure.model.constants and prints them with, per scenario, the range of measured /
predicted for retained (live), bytes shipped, the client's peak, the engine's peak and fallbacks,
under the constants in use and under the ones fitted. Nothing is written: paste the constants into
constants.py.

How: the baselines are medians; the driver's CPU costs (Constants.timing) are measured, not fitted
(see constants.py); the allocator's slack and the transient are fitted together on the peak above
the live data, coefficients >= 0 that make the largest relative error of the peak smallest
(minimax), then scaled so that the predicted peak covers every measured one: the prediction is an
upper bound of the calibration data, to which preflight adds its margin. trim_factor likewise on
the points where trim_after_build trims; the engine's bodies at once on its peak above its baseline
and cache.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from mmbench.errors import MmbenchError
from mmbench.measure.model import driver_time, explain
from mmbench.measure.model.constants import CONSTANTS, Constants
from mmbench.measure.model.modes import behaviour
from mmbench.measure.model.peak import client_parts, engine_basis, slack_basis, transient_basis
from mmbench.measure.model.raw import raw_basis
from mmbench.measure.model.vllm import VLLM, vllm_basis
from mmbench.results import PointRecord, load
from mmbench.units import RSS_NOISE_FLOOR_BYTES


@dataclass(frozen=True, slots=True)
class Point:
    scenario: str
    record: PointRecord

    @property
    def per_image(self) -> float:
        return self.record.source_bytes_per_image or 0.0


def measured_points(directories: Sequence[str]) -> list[Point]:
    """Every ok point with the readings the fit needs, named by its results' scenario."""
    out: list[Point] = []
    for d in directories:
        results = load(d)
        name = str(results.scenario.get("name", d))
        if name == "flags":  # a sweep of command-line flags: named by its directory
            name = Path(d).name
        for r in results.points:
            if r.ok and r.peak_bytes is not None and r.source_bytes_per_image is not None:
                out.append(Point(name, r))
    if not out:
        raise MmbenchError("no measured points in " + ", ".join(directories))
    return out


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """argmin ||a x - b|| over x >= 0 (Lawson and Hanson's active set method)."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(iterations):
        gradient = a.T @ (b - a @ x)
        free = ~passive & (gradient > 1e-12 * max(1.0, float(np.abs(gradient).max())))
        if not free.any():
            break
        passive[np.argmax(np.where(free, gradient, -np.inf))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            step = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + step * (z - x)
            passive &= x > 1e-12
    return x


def minimax(a: np.ndarray, b: np.ndarray, iterations: int = 100) -> np.ndarray:
    """x >= 0 that (nearly) minimizes max |a x - b|: Lawson's iteratively reweighted least squares,
    each weight growing with its row's residual."""
    w = np.full(len(b), 1.0 / len(b))
    x = np.zeros(a.shape[1])
    for _ in range(iterations):
        root = np.sqrt(w)
        x = nnls(a * root[:, None], b * root)
        w = w * np.abs(a @ x - b) + 1e-15
        w /= w.sum()
    return x


def _envelope(excess: list[float], predicted: list[float]) -> float:
    """The factor on `predicted` that makes it cover every `excess` (the prediction an upper bound
    of what was measured)."""
    return max((e / p for e, p in zip(excess, predicted, strict=True) if p > 0), default=1.0)


def _fit_raw_client(points: list[Point], c: Constants) -> tuple[float, ...]:
    """The raw modes' client peak above the live data (model/raw.py's raw_basis): minimax of the
    relative error, then scaled to cover every measured peak."""
    explained = [(p, explain(p.record.config, p.per_image, c)[1]) for p in points]
    peaks = np.array([float(p.record.peak_bytes or 0) for p, _ in explained])
    excess = peaks - np.array([float(pi.live) for _, pi in explained])
    basis = np.array([raw_basis(pi.k, pi.last_turn_body, p.per_image) for p, pi in explained])
    x = minimax(basis / peaks[:, None], excess / peaks)
    x *= _envelope(list(excess), list(basis @ x))
    return tuple(float(v) for v in x)


def _fit_vllm(points: list[Point], c: Constants) -> Constants:
    """A real vLLM's baseline (the median) and what it holds above it (model/vllm.py's vllm_basis):
    minimax of the relative error of its peak, then scaled to cover every measured one."""
    baselines = [r.engine_rss_baseline_bytes for p in points if (r := p.record).engine_rss_baseline_bytes]
    c = replace(c, vllm_baseline=int(statistics.median(baselines)))
    mine = [p for p in points if p.record.engine_peak_rss_bytes and p.record.engine_rss_baseline_bytes]
    explained = [(p.record, *explain(p.record.config, p.per_image, c)) for p in mine]
    peaks = np.array([float(r.engine_peak_rss_bytes or 0) for r, _, _ in explained])
    held = peaks - np.array([float(r.engine_rss_baseline_bytes or 0) for r, _, _ in explained])
    basis = np.array([vllm_basis(pi, pred.engine_cache_bytes) for _, pred, pi in explained])
    x = minimax(basis / peaks[:, None], held / peaks)
    x *= _envelope(list(held), list(basis @ x))
    return replace(c, vllm_engine=tuple(float(v) for v in x))


def fit(points: list[Point], start: Constants = CONSTANTS) -> Constants:
    """The constants that best explain these points (see the module doc)."""
    # A real vLLM's points fit its own engine side (model/vllm.py) and nothing else: its client
    # waits for a slower engine than the one the client's constants are fitted with.
    vllm = [p for p in points if p.record.engine == VLLM]
    points = [p for p in points if p.record.engine != VLLM]
    if vllm:
        start = _fit_vllm(vllm, start)
    if not points:
        return start
    recs = [p.record for p in points]
    clients = [r.rss_baseline_bytes for r in recs if r.rss_baseline_bytes]
    engines = [r.engine_rss_baseline_bytes for r in recs if r.engine_rss_baseline_bytes]
    c = replace(
        start,
        client_baseline=int(statistics.median(clients)) if clients else start.client_baseline,
        engine_baseline=int(statistics.median(engines)) if engines else start.engine_baseline,
    )
    # The raw-media modes' client peak has a model of its own (model/raw.py): fitted apart.
    raw = [p for p in points if not behaviour(p.record.mode).client_renders]
    if raw:
        c = replace(c, raw_client=_fit_raw_client(raw, c))
    points = [p for p in points if behaviour(p.record.mode).client_renders]
    # Codecs other than `fast` get a factor each on the bodies alive at once, fitted apart below.
    others = [p for p in points if p.record.codec != "fast"]
    points = [p for p in points if p.record.codec == "fast"]
    c = replace(c, codec_build=_fit_codec_build(others, c), codec_peak=())
    if points:
        c = _fit_processed(points, c)
    if others:
        c = replace(c, codec_peak=_fit_codecs(others, c))
    return c


def _fit_codec_build(points: list[Point], c: Constants) -> tuple[tuple[str, float], ...]:
    """Per codec measured: the factor on the builds' cost that makes the simulated driver's client
    CPU time closest to the measured client_cpu_s (least squares of the log ratio); codecs without
    points keep theirs."""
    fitted = dict(c.codec_build)
    for codec in sorted({p.record.codec for p in points}):
        mine = [p for p in points if p.record.codec == codec and p.record.client_cpu_s]
        if not mine:
            continue

        def error(factor: float, mine: list[Point] = mine, codec: str = codec) -> float:
            trial = replace(c, codec_build=((codec, factor),))
            simulated = [driver_time(p.record.config, trial).client_cpu_s for p in mine]
            return sum(
                math.log((p.record.client_cpu_s or 0.0) / t) ** 2
                for p, t in zip(mine, simulated, strict=True)
            )

        fitted[codec] = min(BUILD_FACTORS, key=error)
    return tuple(sorted(fitted.items()))


def _fit_codecs(points: list[Point], c: Constants) -> tuple[tuple[str, float, float], ...]:
    """Per codec: the factors on the client's transient and on the engine's bodies that make the
    prediction cover every peak of its points (with `fast`'s coefficients)."""
    out = []
    for codec in sorted({p.record.codec for p in points}):
        explained = [(p.record, *explain(p.record.config, p.per_image, c)) for p in points
                     if p.record.codec == codec]  # fmt: skip
        parts = [(r, client_parts(pi, c)) for r, _, pi in explained]
        client = _envelope(
            [float((r.peak_bytes or 0) - pt["live"] - pt["slack"]) for r, pt in parts],
            [float(pt["transient"]) for _, pt in parts],
        )
        engine_pts = [(r, pred, pi) for r, pred, pi in explained if r.engine_peak_rss_bytes is not None]
        engine = _envelope(
            [float((r.engine_peak_rss_bytes or 0) - c.engine_baseline - pred.engine_cache_bytes)
             for r, pred, _ in engine_pts],
            [float(np.dot(engine_basis(pi), c.engine)) for _, _, pi in engine_pts],
        ) if engine_pts else 1.0  # fmt: skip
        out.append((codec, client, engine))
    return tuple(out)


def _fit_processed(points: list[Point], c: Constants) -> Constants:
    """The slack, the transient, trim_factor and the engine's bodies, on the processed modes' points."""
    explained = [(p.record, *explain(p.record.config, p.per_image, c)) for p in points]
    # The slack and the transient together, on the untrimmed points: the coefficients that make the
    # largest relative error of the peak smallest, then scaled to cover every measured peak.
    plain = [(r, pi) for r, _, pi in explained if not pi.trims]
    basis = np.array([slack_basis(pi) + transient_basis(pi) for _, pi in plain])
    peaks = np.array([float(r.peak_bytes or 0) for r, _ in plain])
    excess = peaks - np.array([float(pi.live) for _, pi in plain])
    x = minimax(basis / peaks[:, None], excess / peaks)
    x *= _envelope(list(excess), list(basis @ x))
    n = len(slack_basis(plain[0][1]))
    c = replace(c, slack=tuple(float(v) for v in x[:n]), transient=tuple(float(v) for v in x[n:]))
    trimmed = [(r, pi) for r, _, pi in explained if pi.trims]
    if trimmed:
        untrimmed = replace(c, trim_factor=1.0)
        parts = [client_parts(pi, untrimmed) for _, pi in trimmed]
        c = replace(c, trim_factor=_envelope(
            [float((r.peak_bytes or 0) - pi.live) for r, pi in trimmed],
            [float(pt["slack"] + pt["transient"]) for pt in parts],
        ))  # fmt: skip
    # The engine: baseline and cache are the model's; the bodies it holds at once are fitted.
    engine_pts = [(r, pred, pi) for r, pred, pi in explained if r.engine_peak_rss_bytes is not None]
    if engine_pts:
        held = [float((r.engine_peak_rss_bytes or 0) - c.engine_baseline - pred.engine_cache_bytes)
                for r, pred, _ in engine_pts]  # fmt: skip
        rows = np.array([engine_basis(pi) for _, _, pi in engine_pts])
        engine_peaks = np.array([float(r.engine_peak_rss_bytes or 0) for r, _, _ in engine_pts])
        e = minimax(rows / engine_peaks[:, None], np.array(held) / engine_peaks)
        c = replace(c, engine=tuple(float(v) for v in e * _envelope(held, list(rows @ e))))
    return c


# The codec build factors calibration tries (a coarse grid: the simulated time is noisy at 5 %).
BUILD_FACTORS = tuple(round(1.0 + 0.1 * i, 1) for i in range(51))

# measured / predicted, per figure
RATIOS: dict[str, Callable[[PointRecord, object], float | None]] = {
    "retained": lambda r, p: _above_noise(r.retained_live_bytes, p.retained_bytes),  # type: ignore[attr-defined]
    "shipped": lambda r, p: _ratio(r.bytes_shipped, p.bytes_shipped),  # type: ignore[attr-defined]
    "peak": lambda r, p: _ratio(r.peak_bytes, p.peak_bytes),  # type: ignore[attr-defined]
    "engine peak": lambda r, p: _ratio(r.engine_peak_rss_bytes, p.engine_peak_bytes),  # type: ignore[attr-defined]
}


def _ratio(measured: float | None, predicted: float) -> float | None:
    return None if measured is None or not predicted else measured / predicted


def _above_noise(measured: float | None, predicted: float) -> float | None:
    """A ratio of RSS figures, none where either is under the RSS noise floor (raw-file retains
    under 1 MiB: its ratio would be noise)."""
    if measured is None or min(measured, predicted) < RSS_NOISE_FLOOR_BYTES:
        return None
    return _ratio(measured, predicted)


def _engine(record: PointRecord) -> str:
    """The engine the model predicts a record's engine side for (an external engine's as embedded)."""
    return VLLM if record.engine == VLLM else "embedded"


@dataclass(frozen=True, slots=True)
class ScenarioFit:
    scenario: str
    points: int
    ranges: dict[str, tuple[float, float]]  # figure -> (lowest, highest) measured / predicted
    fallbacks: list[tuple[int, int]]  # (measured, predicted) where either is > 0


def compare(points: list[Point], c: Constants) -> list[ScenarioFit]:
    """Per scenario: how the model with these constants compares with every measured point."""
    out = []
    for name in dict.fromkeys(p.scenario for p in points):
        mine = [p for p in points if p.scenario == name]
        preds = [explain(p.record.config, p.per_image, c, _engine(p.record))[0] for p in mine]
        ranges = {}
        for figure, ratio in RATIOS.items():
            values = [
                v for p, pred in zip(mine, preds, strict=True) if (v := ratio(p.record, pred)) is not None
            ]
            if values:
                ranges[figure] = (min(values), max(values))
        timed = [p for p in mine if behaviour(p.record.mode).client_renders and p.record.client_cpu_s]
        times = [(p.record, driver_time(p.record.config, c)) for p in timed]
        for figure, measured, simulated in (
            ("client cpu (driver)", lambda r: r.client_cpu_s, lambda t: t.client_cpu_s),
            ("wall (driver)", lambda r: r.rollout_wall_s, lambda t: t.wall_s),
        ):
            values = [v for r, t in times if (v := _ratio(measured(r), simulated(t))) is not None]
            if values:
                ranges[figure] = (min(values), max(values))
        fb = [
            (p.record.fallbacks or 0, pred.fallbacks)
            for p, pred in zip(mine, preds, strict=True)
            if (p.record.fallbacks or 0) or pred.fallbacks
        ]
        out.append(ScenarioFit(name, len(mine), ranges, fb))
    return out


def _print_comparison(title: str, fits: list[ScenarioFit]) -> None:
    print(title)
    for f in fits:
        figures = "  ".join(f"{k} {lo:.2f}-{hi:.2f}" for k, (lo, hi) in f.ranges.items())
        print(f"  {f.scenario:<18} {f.points:>3} points  {figures}")
        if f.fallbacks:
            print(
                "  "
                + " " * 18
                + "   fallbacks measured/predicted: "
                + " ".join(f"{a}/{b}" for a, b in f.fallbacks)
            )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        points = measured_points(args)
        fitted = fit(points)
    except MmbenchError as exc:
        print(f"mmbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(points)} measured points from {', '.join(args)}")
    _print_comparison("with the constants in use:", compare(points, CONSTANTS))
    _print_comparison("with the constants fitted:", compare(points, fitted))
    print("fitted constants (mmbench/measure/model/constants.py):")
    for f in fields(Constants):
        print(f"    {f.name} = {getattr(fitted, f.name)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
