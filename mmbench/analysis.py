"""Aggregation over repeats and least-squares fits: what reporters show, computed once here."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from mmbench.config import PointConfig
from mmbench.results import PointRecord


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
        values = [getattr(r, metric) for r in self.ok_records]
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return Stat(statistics.median(values), min(values), max(values), len(values))

    def first(self, metric: str) -> object:
        return getattr(self.records[0], metric)


def group(records: list[PointRecord]) -> list[PointGroup]:
    """Repeats of the same point together, in the order points first appear."""
    buckets: dict[tuple[object, ...], list[PointRecord]] = {}
    for r in records:
        buckets.setdefault(r.key()[:-1], []).append(r)
    return [PointGroup(rs[0].config, tuple(sorted(rs, key=lambda r: r.repeat))) for rs in buckets.values()]


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
