"""Preflight: refuse a point whose predicted memory would not fit on this machine, before any
process starts. A benchmark about memory must not be the thing that takes the machine down.

The need is the model's system peak (the client's RSS at its peak, baseline included, and the
engine's) plus a stated margin on top of its part that moves from run to run: the model is
calibrated as an upper bound of the peaks measured (mmbench.measure.model.constants), and the
margin covers what calibration cannot (a run noisier than the ones it was fitted on, another
machine, other processes growing meanwhile). What does not move gets none: the processes' baselines
(within 2 % of their medians at every calibration point) and the embedded engine's cache (its bytes
equal to the model's at every point); a margin on them would only waste memory (on vLLM's 4 GiB
baseline alone, 0.4 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from mmbench.config import PointConfig
from mmbench.measure.model import predict
from mmbench.measure.model.prediction import Prediction
from mmbench.units import fmt_bytes

MARGIN = 0.10  # on top of the predicted system peak's part that moves from run to run


@dataclass(frozen=True, slots=True)
class Preflight:
    fits: bool
    need_bytes: int  # the predicted system peak plus the margin on its part that moves
    available_bytes: int
    predicted_bytes: int = 0  # the predicted system peak alone

    @property
    def reason(self) -> str:
        margin = f"{MARGIN:.0%} margin ({fmt_bytes(self.need_bytes - self.predicted_bytes)})"
        need = f"{fmt_bytes(self.predicted_bytes)} + {margin} = {fmt_bytes(self.need_bytes)}"
        return f"predicted {need} > available {fmt_bytes(self.available_bytes)}"


def available_bytes() -> int:
    return int(psutil.virtual_memory().available)


def with_margin(p: Prediction) -> int:
    """What a point with this prediction needs from the machine: its system peak, with the margin
    on the part above the baselines and the embedded engine's cache."""
    exact = min(p.exact_bytes, p.system_peak_bytes)
    return exact + int((p.system_peak_bytes - exact) * (1 + MARGIN))


def preflight(
    config: PointConfig, source_bytes_per_image: float | None = None, budget: int | None = None,
    engine: str = "embedded", held: int = 0,
) -> Preflight:  # fmt: skip
    """Compare the predicted system peak, plus the margin, with the memory available now and
    `held` (or with `budget` where that is less).

    `engine` is the one that serves it (embedded, or vllm: its own memory counts). `held` is what
    the sweep's kept engine holds now (mmbench.measure.engine_pool): the point's prediction counts
    its engine whole, baseline included, and the kept engine either is that engine or is stopped
    before it starts, so its memory is the point's to use (not counting it twice refused 2 kept
    vLLM replicas' points: 7 GiB counted as taken and again as needed).
    Without a source size the sources count as nothing, which is the most lenient estimate: a
    point refused then is refused with any source size, and it costs no image generation.
    """
    prediction = predict(config, source_bytes_per_image or 0.0, engine=engine)
    available = available_bytes() + held
    if budget:
        available = min(available, budget)
    need = with_margin(prediction)
    return Preflight(need <= available, need, available, prediction.system_peak_bytes)
