"""`mmbench plan`'s core: per mode, the largest K whose predicted system peak fits a machine.

Nothing runs: every figure is the model's prediction (mmbench.measure.model), the search a bisection
over K of the predicted system peak plus preflight's margin, which grows with K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mmbench.config import MAX_ROLLOUTS, PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.harness import prediction_for
from mmbench.measure.model import Prediction, predict
from mmbench.measure.preflight import MARGIN, with_margin
from mmbench.transports.registry import MODES

# What the system peak is made of; the largest at the first K that does not fit binds.
PARTS = ("client peak", "engine cache", "engine peak")


@dataclass(frozen=True, slots=True)
class ModePlan:
    mode: str
    rollouts: int  # the largest K that fits; 0 when not even one rollout does
    prediction: Prediction  # at that K (at K = 1 when none fits)
    need_bytes: int  # the predicted system peak plus the margin, at that K
    binding: str  # what the first K that does not fit runs out on (one of PARTS), or "" if none
    bytes_per_turn: int  # bytes shipped per turn by all K rollouts, averaged over the turns
    capped: bool = False  # K reached the largest K mmbench takes and still fits
    # the largest K whose typical system peak (the calibration's median run, no margin) fits
    typical_rollouts: int = 0

    @property
    def parts(self) -> dict[str, int]:
        return system_parts(self.prediction)

    def to_dict(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "mode": self.mode,
            "rollouts": self.rollouts,
            "typical_rollouts": self.typical_rollouts,
            "capped": self.capped,
            "binding": self.binding or None,
            "need_bytes": self.need_bytes,
            "system_peak_bytes": p.system_peak_bytes,
            "parts_bytes": self.parts,
            "retained_bytes": p.retained_bytes,
            "bytes_shipped": p.bytes_shipped,
            "bytes_per_turn": self.bytes_per_turn,
            "prediction": p.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    memory_bytes: int
    margin: float
    point: dict[str, Any]  # the point's parameters but mode and rollouts
    source_bytes_per_image: float
    modes: tuple[ModePlan, ...]
    engine: str = "embedded"  # the engine the points are served by (vllm: its own memory counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory_bytes": self.memory_bytes,
            "engine": self.engine,
            "margin": self.margin,
            "point": self.point,
            "source_bytes_per_image": self.source_bytes_per_image,
            "modes": [m.to_dict() for m in self.modes],
        }


def system_parts(p: Prediction) -> dict[str, int]:
    """The predicted system peak split into PARTS (they add up to it)."""
    return {
        "client peak": p.client_baseline_bytes + p.peak_bytes,
        "engine cache": p.engine_cache_bytes,
        "engine peak": p.engine_peak_bytes - p.engine_cache_bytes,
    }


def bound_need(p: Prediction) -> int:
    """What a point needs by the bound: its predicted system peak plus preflight's margin."""
    return with_margin(p)


def typical_need(p: Prediction) -> int:
    """What a typical run of the point needs: its typical system peak, no margin."""
    return p.typical_system_peak_bytes


def _largest_k(
    base: PointConfig, per_image: float, memory: int, engine: str,
    need: Callable[[Prediction], int] = bound_need,
) -> tuple[int, bool]:  # fmt: skip
    """The largest K whose need fits `memory` (0 if none), and whether the search stopped at
    MAX_ROLLOUTS. The need grows with K, so a bisection finds it."""

    def fits(k: int) -> bool:
        return need(predict(replace(base, rollouts=k), per_image, engine=engine)) <= memory

    if not fits(1):
        return 0, False
    low, high = 1, 2
    while high <= MAX_ROLLOUTS and fits(high):
        low, high = high, 2 * high
    if high > MAX_ROLLOUTS:
        if fits(MAX_ROLLOUTS):
            return MAX_ROLLOUTS, True
        high = MAX_ROLLOUTS
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low, False


def _binding(p: Prediction) -> str:
    parts = system_parts(p)
    return max(parts, key=lambda name: parts[name])


def plan_mode(base: PointConfig, per_image: float, memory: int, engine: str = "embedded") -> ModePlan:
    k, capped = _largest_k(base, per_image, memory, engine)
    at = predict(replace(base, rollouts=max(1, k)), per_image, engine=engine)
    binding = ""
    if not capped:  # the first K that does not fit binds
        binding = _binding(at if k == 0 else predict(replace(base, rollouts=k + 1), per_image, engine=engine))
    per_turn = at.bytes_shipped // base.turns
    typical, _ = _largest_k(base, per_image, memory, engine, typical_need)
    return ModePlan(base.mode, k, at, bound_need(at), binding, per_turn, capped, typical)


def plan(
    base: PointConfig, memory_bytes: int, modes: Sequence[str] | None = None, engine: str = "embedded"
) -> Plan:
    """Per mode (by default every mode the model covers), the largest K that fits `memory_bytes`,
    every other parameter as in `base` (its mode and rollouts are ignored), with `engine` serving
    (embedded, or vllm: its own memory counts)."""
    if memory_bytes <= 0:
        raise MmbenchError(f"--memory must be more than 0, got {memory_bytes}")
    chosen = list(modes) if modes else list(MODES)
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise MmbenchError(f"the model does not cover mode {unknown[0]!r}; it covers: {', '.join(MODES)}")
    per_image, _ = prediction_for(base)  # the mean encoded source size of this point's images
    point = {k: v for k, v in base.to_dict().items() if k not in ("mode", "rollouts")}
    plans = tuple(
        plan_mode(replace(base, mode=mode, rollouts=1), per_image, memory_bytes, engine) for mode in chosen
    )
    return Plan(memory_bytes, MARGIN, point, per_image, plans, engine)
