"""Fit the model's calibrated constants to measured results, and show how the model compares.

    python -m mmbench.measure.model.calibration RESULTS_DIR [RESULTS_DIR ...]

reads every measured point of the results directories, fits the constants of
mmbench.measure.model.constants and prints them with, per scenario, the range of measured /
predicted for retained (live), bytes shipped, the client's peak, the engine's peak and fallbacks,
under the constants in use and under the ones fitted. Nothing is written: paste the constants into
constants.py.

How: the baselines are medians; the driver's CPU costs (Constants.timing) are measured, not fitted
(see constants.py); the allocator's slack and the transient are fitted together on the peak above
the live data: the coefficients >= 0 whose prediction covers every measured peak (an upper bound of
the calibration data, to which preflight adds its margin) and is otherwise as small as it can be,
summed relative to each point's peak (tightest_bound: a linear program). trim_factor and the
codecs' factors scale that bound to cover their points; the engine's bodies at once, the raw
modes' client, the raw modes' engine slack once its cache evicts and a real vLLM's tree are bounds
of the same kind on their own peaks. Last, what a typical run reaches of each bound (`typical`, and
`typical_raw` for the raw modes): the median over the points of the measured share of the bound
above what the model knows exactly (the client's live data, the engine's baseline and cache), which
`mmbench plan` plans a typical run with beside the bound.
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
from mmbench.facts import mode_of
from mmbench.measure.model import driver_time, explain
from mmbench.measure.model.constants import CONSTANTS, Constants
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
        return self.record.prediction.source_bytes_per_image or 0.0


def measured_points(directories: Sequence[str]) -> list[Point]:
    """Every ok point with the readings the fit needs, named by its results' scenario."""
    out: list[Point] = []
    for d in directories:
        results = load(d)
        name = str(results.scenario.get("name", d))
        if name == "flags":  # a sweep of command-line flags: named by its directory
            name = Path(d).name
        for r in results.points:
            if r.ok and r.client.peak_bytes is not None and r.prediction.source_bytes_per_image is not None:
                out.append(Point(name, r))
    if not out:
        raise MmbenchError("no measured points in " + ", ".join(directories))
    return out


def tightest_bound(
    basis: np.ndarray, target: np.ndarray, peaks: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Coefficients x >= 0 such that basis @ x covers every target (an upper bound of what was
    measured) and is, summed relative to each point's peak (times its weight), as small as it can
    be: a linear program (HiGHS, through scipy.optimize.linprog). Each row is taken relative to its
    peak so that a large point counts no more than a small one; columns are scaled to 1 for the
    solver."""
    from scipy.optimize import linprog  # the dev extra: only calibration needs it

    a = basis / peaks[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    a = a / scale
    w = np.ones(len(peaks)) if weights is None else weights
    result = linprog((a * w[:, None]).sum(axis=0), A_ub=-a, b_ub=-(target / peaks), bounds=(0, None),
                     method="highs")  # fmt: skip
    if not result.success:
        raise MmbenchError(f"calibration: no bound covers the points ({result.message})")
    return np.asarray(result.x) / scale


def _envelope(excess: list[float], predicted: list[float]) -> float:
    """The factor on `predicted` that makes it cover every `excess` (the prediction an upper bound
    of what was measured)."""
    return max((e / p for e, p in zip(excess, predicted, strict=True) if p > 0), default=1.0)


def _fit_raw_engine_slack(points: list[Point], c: Constants) -> float:
    """The raw modes' engine slack once its cache evicts (model/raw.py's evicted_slack_basis): the
    factor that makes the engine's predicted peak cover every measured one whose cache evicted."""
    excess: list[float] = []
    basis: list[float] = []
    for p in points:
        engine_peak = p.record.engine.figures.peak_rss_bytes
        if engine_peak is None:
            continue
        without = explain(p.record.config, p.per_image, replace(c, raw_engine_slack=0.0))[0]
        unit = explain(p.record.config, p.per_image, replace(c, raw_engine_slack=1.0))[0]
        excess.append(float(engine_peak - without.engine_peak_bytes))
        basis.append(float(unit.engine_peak_bytes - without.engine_peak_bytes))
    if not any(basis):
        return c.raw_engine_slack
    return max(0.0, _envelope(excess, basis))


def _fit_raw_client(points: list[Point], c: Constants) -> tuple[float, ...]:
    """The raw modes' client peak above the live data (model/raw.py's raw_basis): the tightest
    bound of every measured peak."""
    explained = [(p, explain(p.record.config, p.per_image, c)[1]) for p in points]
    peaks = np.array([float(p.record.client.peak_bytes or 0) for p, _ in explained])
    excess = peaks - np.array([float(pi.live) for _, pi in explained])
    basis = np.array([raw_basis(pi.k, pi.last_turn_body, p.per_image) for p, pi in explained])
    return tuple(float(v) for v in tightest_bound(basis, excess, peaks))


def _fit_vllm(points: list[Point], c: Constants) -> Constants:
    """A real vLLM's baseline (the median) and what it holds above it (model/vllm.py's vllm_basis):
    the tightest bound of every measured peak."""
    baselines = [e.rss_baseline_bytes for p in points if (e := p.record.engine.figures).rss_baseline_bytes]
    c = replace(c, vllm_baseline=int(statistics.median(baselines)))
    mine = [p for p in points if (e := p.record.engine.figures).peak_rss_bytes and e.rss_baseline_bytes]
    explained = [(p.record, *explain(p.record.config, p.per_image, c)) for p in mine]
    peaks = np.array([float(r.engine.figures.peak_rss_bytes or 0) for r, _, _ in explained])
    held = peaks - np.array([float(r.engine.figures.rss_baseline_bytes or 0) for r, _, _ in explained])
    basis = np.array([vllm_basis(pi, pred.engine_cache_bytes) for _, pred, pi in explained])
    x = tightest_bound(basis, held, peaks)
    return replace(c, vllm_engine=tuple(float(v) for v in x))


def fit(points: list[Point], start: Constants = CONSTANTS) -> Constants:
    """The constants that best explain these points (see the module doc)."""
    # A real vLLM's points fit its own engine side (model/vllm.py) and nothing else: its client
    # waits for a slower engine than the one the client's constants are fitted with.
    c = _fit_bounds(points, start)
    processed, raw = _fit_typical(points, c)
    return replace(c, typical=processed, typical_raw=raw)


def _share(measured: float, floor: float, bound: float) -> float | None:
    """What a measured peak reaches of its bound above the floor the model knows exactly."""
    return (measured - floor) / (bound - floor) if bound > floor else None


def _fit_typical(points: list[Point], c: Constants) -> tuple[tuple[float, float, float], tuple[float, float]]:
    """Constants.typical and typical_raw: the medians of the measured shares of the bounds (see
    constants.py), the raw modes' apart (their bounds are models of their own)."""
    shares: dict[str, list[float]] = {k: [] for k in ("client", "engine", "vllm", "raw client", "raw engine")}
    for p in points:
        r = p.record
        on_vllm = r.engine.kind == VLLM
        raw = "" if mode_of(r.config.mode).renders else "raw "
        pred = explain(r.config, p.per_image, c, VLLM if on_vllm else "embedded")[0]
        if not on_vllm and r.client.peak_bytes is not None:
            share = _share(r.client.peak_bytes, pred.retained_bytes, pred.peak_bytes)
            shares[raw + "client"] += [share] if share is not None else []
        if r.engine.figures.peak_rss_bytes is not None:
            share = _share(r.engine.figures.peak_rss_bytes, pred.engine_floor_bytes, pred.engine_peak_bytes)
            shares["vllm" if on_vllm else raw + "engine"] += [share] if share is not None else []

    def median(name: str, keep: float) -> float:
        return statistics.median(shares[name]) if shares[name] else keep

    t, tr = c.typical, c.typical_raw
    processed = (median("client", t[0]), median("engine", t[1]), median("vllm", t[2]))
    return processed, (median("raw client", tr[0]), median("raw engine", tr[1]))


def _fit_bounds(points: list[Point], start: Constants) -> Constants:
    """Every constant but `typical`: the baselines and the bounds (see the module doc)."""
    vllm = [p for p in points if p.record.engine.kind == VLLM]
    points = [p for p in points if p.record.engine.kind != VLLM]
    if vllm:
        start = _fit_vllm(vllm, start)
    if not points:
        return start
    recs = [p.record for p in points]
    clients = [b for r in recs if (b := r.client.rss.baseline_bytes)]
    engines = [b for r in recs if (b := r.engine.figures.rss_baseline_bytes)]
    c = replace(
        start,
        client_baseline=int(statistics.median(clients)) if clients else start.client_baseline,
        engine_baseline=int(statistics.median(engines)) if engines else start.engine_baseline,
    )
    # The raw-media modes' client peak has a model of its own (model/raw.py): fitted apart.
    raw = [p for p in points if not mode_of(p.record.config.mode).renders]
    if raw:
        c = replace(c, raw_client=_fit_raw_client(raw, c))
    processed = [p for p in points if mode_of(p.record.config.mode).renders]
    others = [p for p in processed if p.record.config.codec != "fast"]
    c = replace(c, codec_build=_fit_codec_build(others, c), codec_peak=())
    if processed:
        c = _fit_processed(processed, c)
    # The raw modes' engine shares the engine's bodies with the processed modes: its slack after.
    if raw:
        c = replace(c, raw_engine_slack=_fit_raw_engine_slack(raw, c))
    return c


def _fit_codec_build(points: list[Point], c: Constants) -> tuple[tuple[str, float], ...]:
    """Per codec measured: the factor on the builds' cost that makes the simulated driver's client
    CPU time closest to the measured client_cpu_s (least squares of the log ratio); codecs without
    points keep theirs."""
    fitted = dict(c.codec_build)
    for codec in sorted({p.record.config.codec for p in points}):
        mine = [p for p in points if p.record.config.codec == codec and p.record.client.cpu_s]
        if not mine:
            continue

        def error(factor: float, mine: list[Point] = mine, codec: str = codec) -> float:
            trial = replace(c, codec_build=((codec, factor),))
            simulated = [driver_time(p.record.config, trial).client_cpu_s for p in mine]
            return sum(
                math.log((p.record.client.cpu_s or 0.0) / t) ** 2
                for p, t in zip(mine, simulated, strict=True)
            )

        fitted[codec] = min(BUILD_FACTORS, key=error)
    return tuple(sorted(fitted.items()))


# The factors on a codec's bodies alive at once (client transient, engine bodies) tried for each
# codec other than `fast`: the bound is fitted on every codec's points at once for each, and the
# factor whose bound is tightest kept.
PEAK_FACTORS = tuple(round(0.2 + 0.05 * i, 2) for i in range(57))


@dataclass(frozen=True, slots=True)
class Row:
    """One point in a bound's fit: its basis (a fixed part, and a part its codec's factor scales),
    what the bound must cover, its peak (the error is relative to it) and its weight."""

    fixed: list[float]
    scaled: list[float]
    target: float
    peak: float
    codec: str
    weight: float


def _weights(scenarios: list[str]) -> list[float]:
    """Each scenario counts as much as any other in a fit, however many points (or runs) it has."""
    counts = {name: scenarios.count(name) for name in set(scenarios)}
    return [1.0 / counts[name] for name in scenarios]


def _bound(rows: list[Row], factors: dict[str, float]) -> tuple[np.ndarray, float]:
    """The tightest bound of rows with these codec factors, and its objective."""
    basis = np.array([r.fixed + [factors.get(r.codec, 1.0) * v for v in r.scaled] for r in rows])
    peaks = np.array([r.peak for r in rows])
    weights = np.array([r.weight for r in rows])
    x = tightest_bound(basis, np.array([r.target for r in rows]), peaks, weights)
    return x, float((weights * (basis @ x) / peaks).sum())


def _best_factors(rows: list[Row]) -> tuple[np.ndarray, dict[str, float]]:
    """The bound and the per-codec factors (fast: 1) whose bound is tightest, codec by codec."""
    factors: dict[str, float] = {}
    for codec in sorted({r.codec for r in rows} - {"fast"}):
        factors[codec] = min(PEAK_FACTORS, key=lambda f: _bound(rows, {**factors, codec: f})[1])
    return _bound(rows, factors)[0], factors


def _fit_processed(points: list[Point], c: Constants) -> Constants:
    """The slack, the transient, trim_factor, the engine's bodies and the codecs' factors on them,
    on the processed modes' points of every codec."""
    explained = [(p.record, *explain(p.record.config, p.per_image, c)) for p in points]
    weight = dict(zip(map(id, points), _weights([p.scenario for p in points]), strict=True))
    w = [weight[id(p)] for p in points]
    # The slack and the transient together, on the untrimmed points: the tightest bound of every
    # measured peak, each codec's transient scaled by its own factor.
    plain = [(r, pi, wt) for (r, _, pi), wt in zip(explained, w, strict=True) if not pi.trims]
    rows = [Row(slack_basis(pi), transient_basis(pi), float((r.client.peak_bytes or 0) - pi.live),
                float(r.client.peak_bytes or 0), r.config.codec, wt) for r, pi, wt in plain]  # fmt: skip
    x, client_factors = _best_factors(rows)
    n = len(slack_basis(plain[0][1]))
    c = replace(c, slack=tuple(float(v) for v in x[:n]), transient=tuple(float(v) for v in x[n:]))
    # The engine: baseline and cache are the model's; the bodies it holds at once are fitted.
    engine_pts = [(r, pred, pi, wt) for (r, pred, pi), wt in zip(explained, w, strict=True)
                  if r.engine.figures.peak_rss_bytes is not None]  # fmt: skip
    engine_factors: dict[str, float] = {}
    if engine_pts:
        engine_rows = [
            Row([], engine_basis(pi), float(peak - c.engine_baseline - pred.engine_cache_bytes),
                float(peak), r.config.codec, wt)
            for r, pred, pi, wt in engine_pts if (peak := r.engine.figures.peak_rss_bytes or 0)
        ]  # fmt: skip
        e, engine_factors = _best_factors(engine_rows)
        c = replace(c, engine=tuple(float(v) for v in e))
    codecs = sorted(set(client_factors) | set(engine_factors))
    c = replace(c, codec_peak=tuple(
        (codec, client_factors.get(codec, 1.0), engine_factors.get(codec, 1.0)) for codec in codecs
    ))  # fmt: skip
    trimmed = [(r, pi) for r, _, pi in explained if pi.trims]
    if trimmed:
        untrimmed = replace(c, trim_factor=1.0)
        parts = [client_parts(pi, untrimmed) for _, pi in trimmed]
        c = replace(c, trim_factor=_envelope(
            [float((r.client.peak_bytes or 0) - pi.live) for r, pi in trimmed],
            [float(pt["slack"] + pt["transient"]) for pt in parts],
        ))  # fmt: skip
    return c


# The codec build factors calibration tries (a coarse grid: the simulated time is noisy at 5 %).
BUILD_FACTORS = tuple(round(1.0 + 0.1 * i, 1) for i in range(51))

# measured / predicted, per figure
RATIOS: dict[str, Callable[[PointRecord, object], float | None]] = {
    "retained": lambda r, p: _above_noise(r.client.retained_live_bytes, p.retained_bytes),  # type: ignore[attr-defined]
    "shipped": lambda r, p: _ratio(r.traffic.bytes_shipped, p.bytes_shipped),  # type: ignore[attr-defined]
    "peak": lambda r, p: _ratio(r.client.peak_bytes, p.peak_bytes),  # type: ignore[attr-defined]
    "engine peak": lambda r, p: _ratio(r.engine.figures.peak_rss_bytes, p.engine_peak_bytes),  # type: ignore[attr-defined]
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
    return VLLM if record.engine.kind == VLLM else "embedded"


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
        timed = [p for p in mine if mode_of(p.record.config.mode).renders and p.record.client.cpu_s]
        times = [(p.record, driver_time(p.record.config, c)) for p in timed]
        for figure, measured, simulated in (
            ("client cpu (driver)", lambda r: r.client.cpu_s, lambda t: t.client_cpu_s),
            ("wall (driver)", lambda r: r.timing.rollout_wall_s, lambda t: t.wall_s),
        ):
            values = [v for r, t in times if (v := _ratio(measured(r), simulated(t))) is not None]
            if values:
                ranges[figure] = (min(values), max(values))
        fb = [
            (p.record.traffic.fallbacks or 0, pred.fallbacks)
            for p, pred in zip(mine, preds, strict=True)
            if (p.record.traffic.fallbacks or 0) or pred.fallbacks
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
