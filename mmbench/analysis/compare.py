"""Compare two results files point by point: what `mmbench compare` gates CI on.

Points are matched on every config field (the repeat aside); only `ok` records are measured
figures, so anything else is listed as not compared rather than silently dropped. Every metric is
lower-is-better, so a regression is a significant increase above the threshold.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from operator import attrgetter
from typing import Any

from mmbench.analysis.fits import mode_fits
from mmbench.config import field_names
from mmbench.errors import MmbenchError
from mmbench.results import PointRecord, ResultsFile

# metric name -> the dotted path of the figure it reads ("slope" fits retained_live over K).
METRICS: dict[str, str] = {
    "retained": "client.retained_live_bytes",
    "retained_raw": "client.retained_bytes",
    "peak": "client.peak_bytes",
    "bytes_shipped": "traffic.bytes_shipped",
    "slope": "client.retained_live_bytes",
}
METRIC_LABELS: dict[str, str] = {
    "retained": "retained (live)",
    "retained_raw": "retained (raw)",
    "peak": "peak",
    "bytes_shipped": "bytes shipped",
    "slope": "retained (live) per rollout",
}
ALPHA = 0.05
EXACT_MAX_N = 8  # up to 8 vs 8 the exact test enumerates C(16, 8) = 12,870 splits: instant

PointKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a row: the figure shown and the samples the significance test sees."""

    value: float
    samples: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    kind: str  # "point" or "slope"
    base: Side
    head: Side
    change_pct: float  # (head - base) / |base|, in percent
    p_value: float | None  # None without repeats on both sides
    significant: bool
    gating: bool  # False: shown for information, never a regression
    regression: bool

    @property
    def repeated(self) -> bool:
        return self.base.n >= 2 and self.head.n >= 2

    @property
    def ranges_apart(self) -> bool:
        return self.base.hi < self.head.lo or self.head.hi < self.base.lo


@dataclass(frozen=True, slots=True)
class NotCompared:
    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class Comparison:
    metric: str
    threshold: float  # percent
    rows: tuple[Row, ...]
    not_compared: tuple[NotCompared, ...]

    @property
    def gating_rows(self) -> list[Row]:
        return [r for r in self.rows if r.gating]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    @property
    def no_repeats(self) -> bool:
        """Some gating row has a single repeat on a side, so every change there counts."""
        return any(not r.repeated for r in self.gating_rows)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p of the Mann-Whitney U test.

    Exact for small samples: every split of the pooled (mid)ranks is enumerated, which also
    handles ties (RSS is read in pages, so equal readings happen). Beyond EXACT_MAX_N per side the
    normal approximation with tie and continuity corrections is accurate enough.
    """
    m, n = len(a), len(b)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    pooled = sorted(a + b)
    twice_rank: dict[float, int] = {}  # doubled midranks stay integers, so equality is exact
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j] == pooled[i]:
            j += 1
        twice_rank[pooled[i]] = i + 1 + j
        i = j
    ranks = [twice_rank[v] for v in a + b]
    offset = m * (m + 1) + m * n  # 2U - mn = 2R - m(m+1) - mn
    observed = abs(sum(ranks[:m]) - offset)
    if max(m, n) <= EXACT_MAX_N:
        splits = list(combinations(ranks, m))
        extreme = sum(1 for s in splits if abs(sum(s) - offset) >= observed)
        return extreme / len(splits)
    total = m + n
    ties = sum(t**3 - t for t in Counter(pooled).values())
    variance = m * n / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = max(observed / 2 - 0.5, 0.0) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def change_pct(base: float, head: float) -> float:
    if base == 0:
        return 0.0 if head == 0 else math.copysign(math.inf, head)
    # |base|: a (rare) negative retained figure must not flip the sign of an increase
    return (head - base) / abs(base) * 100.0


def make_row(
    label: str, kind: str, base: Side, head: Side, threshold: float, gating: bool, min_change: float = 0.0
) -> Row:
    change = change_pct(base.value, head.value)
    if base.n >= 2 and head.n >= 2:
        p: float | None = mann_whitney_p(list(base.samples), list(head.samples))
        apart = base.hi < head.lo or head.hi < base.lo
        # With 3 vs 3 the exact test cannot go below p = 0.1, so ranges that do not overlap
        # must count on their own or repeats would make the gate blind.
        significant = apart or (p is not None and p < ALPHA)
    else:
        p, significant = None, True  # a single repeat: no way to tell noise, so every change counts
    # Below min_change (bytes) a change is within the measurement floor however large in percent.
    regression = gating and significant and change > threshold and head.value - base.value > min_change
    return Row(label, kind, base, head, change, p, significant, gating, regression)


def _config_key(r: PointRecord) -> PointKey:
    return r.key()[:-1]


def _by_key(records: list[PointRecord]) -> dict[PointKey, list[PointRecord]]:
    out: dict[PointKey, list[PointRecord]] = {}
    for r in records:
        out.setdefault(_config_key(r), []).append(r)
    return out


class _Labels:
    """Names points by mode, K and whatever else varies between them (image size, turns, ...)."""

    def __init__(self, keys: list[PointKey]) -> None:
        names = field_names()
        self.names = names
        self.varying = [
            i
            for i, name in enumerate(names)
            if name not in ("mode", "rollouts") and len({k[i] for k in keys}) > 1
        ]

    def extra(self, key: PointKey) -> str:
        return "".join(f" {self.names[i]}={key[i]}" for i in self.varying)

    def point(self, key: PointKey) -> str:
        return f"{key[self.names.index('mode')]} K={key[self.names.index('rollouts')]}{self.extra(key)}"


def _status_reason(side: str, records: list[PointRecord]) -> str:
    statuses = sorted({r.status for r in records})
    causes = [r.cause for r in records if r.cause]
    return f"{side}: {'/'.join(statuses)}" + (f" ({causes[0]})" if causes else "")


def _values(records: list[PointRecord], field: str) -> list[float]:
    read = attrgetter(field)
    return [float(v) for r in records if r.ok and (v := read(r)) is not None]


def _slopes(records: list[PointRecord]) -> Side | None:
    """The mode's slope over K: the fit of the medians (what the sweep's fits table shows), with
    one fit per repeat as the samples the significance test compares."""
    fits = mode_fits(records)
    if not fits:
        return None
    per_repeat: list[float] = []
    for repeat in sorted({r.repeat for r in records}):
        per_repeat += [f.fit.slope for f in mode_fits([r for r in records if r.repeat == repeat])]
    return Side(fits[0].fit.slope, tuple(per_repeat) or (fits[0].fit.slope,))


def compare(
    base: ResultsFile, head: ResultsFile, metric: str, threshold: float, min_change: float = 0.0
) -> Comparison:
    """Every point (and, for retained and slope, every mode's slope) of `head` against `base`;
    `threshold` is in percent; a point's increase must also exceed `min_change` bytes to count.
    Unusable input raises MmbenchError (exit code 2)."""
    if metric not in METRICS:
        raise MmbenchError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    if not math.isfinite(threshold) or threshold < 0:
        raise MmbenchError(f"threshold must be a percentage >= 0, got {threshold}")
    field = METRICS[metric]
    base_pts, head_pts = _by_key(base.points), _by_key(head.points)
    shared = [k for k in base_pts if k in head_pts]
    if not shared:
        raise MmbenchError(
            "base and head have no point in common (every config field must match); "
            "were they measured from the same scenario?"
        )
    for side, pts in (("base", base_pts), ("head", head_pts)):
        if not any(_values(pts[k], field) for k in shared):
            raise MmbenchError(
                f"{side} has no {field} on any shared point with status ok; nothing to compare"
            )

    labels = _Labels(list(base_pts) + [k for k in head_pts if k not in base_pts])
    rows: list[Row] = []
    skipped: list[NotCompared] = []
    compared: list[PointKey] = []
    for key in shared:
        b, h = _values(base_pts[key], field), _values(head_pts[key], field)
        if not b or not h:
            side, recs = ("base", base_pts[key]) if not b else ("head", head_pts[key])
            reason = _status_reason(side, recs) if not any(r.ok for r in recs) else f"{side}: no {field}"
            skipped.append(NotCompared(labels.point(key), reason))
            continue
        compared.append(key)
        side_b = Side(statistics.median(b), tuple(b))
        side_h = Side(statistics.median(h), tuple(h))
        rows.append(
            make_row(labels.point(key), "point", side_b, side_h, threshold, metric != "slope", min_change)
        )
    skipped += [NotCompared(labels.point(k), "only in base") for k in base_pts if k not in head_pts]
    skipped += [NotCompared(labels.point(k), "only in head") for k in head_pts if k not in base_pts]

    if metric in ("retained", "slope"):
        rows += _slope_rows(base_pts, head_pts, compared, labels, threshold, gating=metric == "slope")
        if metric == "slope" and not any(r.kind == "slope" for r in rows):
            raise MmbenchError(
                "slope needs at least two values of K per mode in both files; use --metric retained"
            )
    return Comparison(metric, threshold, tuple(rows), tuple(skipped))


def _slope_rows(
    base_pts: dict[PointKey, list[PointRecord]],
    head_pts: dict[PointKey, list[PointRecord]],
    compared: list[PointKey],
    labels: _Labels,
    threshold: float,
    gating: bool,
) -> list[Row]:
    """One row per line over K (mode and every other field fixed), fitted on the points both
    sides measured, so that a point missing on one side cannot move the other side's slope."""
    k_index = field_names().index("rollouts")
    lines: dict[PointKey, list[PointKey]] = {}
    for key in compared:
        lines.setdefault(key[:k_index] + key[k_index + 1 :], []).append(key)
    rows: list[Row] = []
    for keys in lines.values():
        b = _slopes([r for k in keys for r in base_pts[k] if r.ok])
        h = _slopes([r for k in keys for r in head_pts[k] if r.ok])
        if b is None or h is None:
            continue
        mode = keys[0][field_names().index("mode")]
        rows.append(make_row(f"slope {mode}{labels.extra(keys[0])}", "slope", b, h, threshold, gating))
    return rows
