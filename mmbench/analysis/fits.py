"""Aggregation over repeats and least-squares fits: what reporters show, computed once here."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from operator import attrgetter

from mmbench.config import PointConfig
from mmbench.measure.machines import machines_differ, split_key
from mmbench.results import PointRecord
from mmbench.transports.registry import TRANSPORTS
from mmbench.units import RSS_NOISE_FLOOR_BYTES


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    lo: float
    hi: float
    n: int

    @property
    def spread(self) -> float:
        """(max - min) / median: the repeat-to-repeat spread."""
        return (self.hi - self.lo) / self.median if self.median else 0.0


@dataclass(frozen=True, slots=True)
class PointGroup:
    """The repeats of one point."""

    config: PointConfig
    records: tuple[PointRecord, ...]
    machine: str | None = None  # set where the records' machines differ (mmbench/measure/machines.py)

    @property
    def ok_records(self) -> list[PointRecord]:
        return [r for r in self.records if r.ok]

    @property
    def status(self) -> str:
        statuses = {r.status for r in self.records}
        return statuses.pop() if len(statuses) == 1 else "mixed"

    @property
    def causes(self) -> list[str]:
        return [r.cause for r in self.records if r.cause]

    def stat(self, metric: str) -> Stat | None:
        """The median and range of a figure (its dotted path, `client.retained_live_bytes`) over
        the repeats that ran."""
        values = [attrgetter(metric)(r) for r in self.ok_records]
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return Stat(statistics.median(values), min(values), max(values), len(values))

    def first(self, metric: str) -> object:
        return attrgetter(metric)(self.records[0])


def group(records: list[PointRecord]) -> list[PointGroup]:
    """Repeats of the same point together, in the order points first appear; apart per machine
    where the records come from machines of different kinds."""
    split = machines_differ(records)
    buckets: dict[tuple[object, ...], list[PointRecord]] = {}
    for r in records:
        buckets.setdefault((*r.key()[:-1], split_key(r, split)), []).append(r)
    return [
        PointGroup(rs[0].config, tuple(sorted(rs, key=lambda r: r.repeat)), split_key(rs[0], split))
        for rs in buckets.values()
    ]


@dataclass(frozen=True, slots=True)
class Fit:
    slope: float
    intercept: float
    r2: float
    n: int

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


def fit_line(xs: list[float], ys: list[float]) -> Fit | None:
    """Ordinary least squares y = a + b x, with R^2; None for fewer than two distinct x."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return Fit(slope, intercept, r2, n)


@dataclass(frozen=True, slots=True)
class ModeFit:
    """retained_live over K for one mode and one setting of every other parameter, past the K that
    fills the caches where there are two such K (else over every K, the cache still filling)."""

    mode: str
    label: str  # the mode, plus the parameters that tell this family from the others in the results
    fit: Fit
    k_from: int  # the smallest K in the fit
    k_to: int  # the largest
    floor_per_rollout: float  # what one rollout's trajectory holds (the ledger at the largest K)
    cache_full: bool = True  # every K of the fit is past the K that fills the renderer caches
    model_slope: float | None = None  # the model's slope over the same K (its predictions)
    machine: str | None = None  # the machine of its points, where the records' machines differ

    @property
    def vs_floor(self) -> float:
        return self.fit.slope / self.floor_per_rollout if self.floor_per_rollout else float("nan")

    @property
    def expected(self) -> tuple[float | None, str]:
        """What the slope should be, and against what: the floor once the caches are full (each
        more rollout adds exactly its own data); while a cache still fills, each more rollout also
        adds to the cache, which only the model's slope accounts for."""
        if self.cache_full:
            return self.floor_per_rollout, "floor"
        return self.model_slope, "model"

    @property
    def resolvable(self) -> bool:
        """Whether the growth expected over the fitted K rises above the noise floor of RSS
        readings: below it the slope is noise, and so is any ratio of it."""
        want, _ = self.expected
        return want is not None and want * (self.k_to - self.k_from) >= RSS_NOISE_FLOOR_BYTES

    @property
    def vs_expected(self) -> float | None:
        want, _ = self.expected
        return self.fit.slope / want if want and self.resolvable else None


def cache_full_k(config: PointConfig) -> int:
    """The smallest K from which one more rollout adds only its own data: where the renderer
    caches are the only holder of what they keep (the ephemeral modes), the K that fills them."""
    transport = TRANSPORTS[config.mode]
    if transport.stores_pixels or not transport.renders:
        return 1  # the caches hold what the trajectories hold anyway, or there is no renderer
    per_rollout = config.turns * config.images_per_turn
    capacity = config.pool_size * config.image_cache_max
    return max(1, -(-capacity // per_rollout))


def family(config: PointConfig) -> tuple[tuple[str, object], ...]:
    """Every parameter but K: the points one fit over K may combine."""
    return tuple((k, v) for k, v in config.to_dict().items() if k != "rollouts")


def family_labels(configs: list[PointConfig]) -> dict[tuple[tuple[str, object], ...], str]:
    """A short name per family: the mode, plus whatever else varies across the families."""
    fams = {family(c) for c in configs}
    varying = (
        [k for k in dict(next(iter(fams))) if len({dict(f)[k] for f in fams}) > 1 and k != "mode"]
        if fams
        else []
    )
    return {f: " ".join([str(dict(f)["mode"]), *(f"{k}={dict(f)[k]}" for k in varying)]) for f in fams}


# What one rollout's trajectory holds, by the ledger: the floor of its slope.
TRAJECTORY_PARTS = tuple(
    f"client.accounting.{k}"
    for k in ("stored_pixel_bytes", "source_bytes", "descriptor_bytes", "other_bytes")
)


def mode_fits(records: list[PointRecord], metric: str = "client.retained_live_bytes") -> list[ModeFit]:
    """Per family (mode and every other parameter but K), least squares of `metric` (median of
    repeats) over K, from the cache-full K on (or over every K when fewer than two lie past it)."""
    # One line per machine too: points measured on different hardware are not fitted together.
    by_family: dict[tuple[tuple[tuple[str, object], ...], str | None], list[PointGroup]] = {}
    for g in group(records):
        if g.stat(metric) is not None:
            by_family.setdefault((family(g.config), g.machine), []).append(g)
    labels = family_labels([g.config for gs in by_family.values() for g in gs])
    fits: list[ModeFit] = []
    for (fam, machine), groups in by_family.items():
        past = [g for g in groups if g.config.rollouts >= cache_full_k(g.config)]
        chosen = past if len({g.config.rollouts for g in past}) >= 2 else groups
        xs = [float(g.config.rollouts) for g in chosen]
        ys = [g.stat(metric).median for g in chosen]  # type: ignore[union-attr]
        fit = fit_line(xs, ys)
        if fit is None:
            continue
        top = max(chosen, key=lambda g: g.config.rollouts)
        floor = sum((s.median if (s := top.stat(k)) else 0.0) for k in TRAJECTORY_PARTS) / top.config.rollouts
        predicted = [g.first("prediction.retained_bytes") for g in chosen]
        model = fit_line(xs, [float(p) for p in predicted]) if None not in predicted else None  # type: ignore[arg-type]
        k_from, k_to = min(g.config.rollouts for g in chosen), top.config.rollouts
        label = labels[fam] + (f" on {machine}" if machine else "")
        fits.append(
            ModeFit(
                top.config.mode, label, fit, k_from, k_to, floor, cache_full=chosen is past,
                model_slope=model.slope if model else None, machine=machine,
            )
        )  # fmt: skip
    return fits
