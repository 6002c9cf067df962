"""The models side by side: where the results hold points of several `--model` presets that differ
in nothing else, each mode's retained slope per model against its floor, with the model's image
size and what a rollout ships (`mmbench sweep models`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from mmbench.analysis.fits import mode_fits
from mmbench.results import PointRecord
from mmbench.transports.registry import MODES
from mmbench.world.geometry import MODELS


@dataclass(frozen=True, slots=True)
class ModelRow:
    mode: str
    model: str
    slope: float  # retained (live) bytes per rollout, least squares over K
    expected: float | None  # the floor (caches full) or the model's slope (a cache still filling)
    against: str  # "floor" or "model"
    k_from: int
    k_to: int
    pixel_bytes_per_image: int | None  # float32 pixel_values of one image (this model's layout)
    shipped_per_rollout: float | None  # bytes shipped per rollout at the largest K (median of repeats)
    # the growth expected over the K fitted rises above the noise of RSS readings (else no ratio)
    resolvable: bool = True

    @property
    def ratio(self) -> float | None:
        return self.slope / self.expected if self.expected and self.resolvable else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def model_rows(records: list[PointRecord], metric: str = "client.retained_live_bytes") -> list[ModelRow]:
    """A row per (mode, model), modes in the registry's order, models in the results' order; none
    unless the measured points span two models or more."""
    ok = [r for r in records if r.status == "ok"]
    models = list(dict.fromkeys(r.config.model for r in ok))
    if len(models) < 2:
        return []
    rows = []
    for model in models:
        mine = [r for r in ok if r.config.model == model]
        for fit in mode_fits(mine, metric):
            top = [r for r in mine if r.config.mode == fit.mode and r.config.rollouts == fit.k_to]
            if len({(r.config.image_size, r.config.dtype) for r in top}) != 1:
                continue  # another parameter varies too: the section tables show those
            shipped = [r.traffic.bytes_shipped for r in top if r.traffic.bytes_shipped is not None]
            layout = MODELS[model].layout(*top[0].config.image_wh) if model in MODELS else None
            expected, against = fit.expected
            rows.append(
                ModelRow(
                    fit.mode, model, fit.fit.slope, expected, against, fit.k_from, fit.k_to,
                    layout.pixel_bytes() if layout is not None else None,
                    statistics.median(shipped) / fit.k_to if shipped else None, fit.resolvable,
                )
            )  # fmt: skip
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(rows, key=lambda r: (order.get(r.mode, len(order)), models.index(r.model)))
