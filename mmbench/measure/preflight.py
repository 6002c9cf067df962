"""Preflight: refuse a point whose predicted memory would not fit on this machine, before any
process starts. A benchmark about memory must not be the thing that takes the machine down."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from mmbench.config import PointConfig
from mmbench.measure.model import predict
from mmbench.units import fmt_bytes


@dataclass(frozen=True, slots=True)
class Preflight:
    fits: bool
    need_bytes: int
    available_bytes: int

    @property
    def reason(self) -> str:
        return f"predicted {fmt_bytes(self.need_bytes)} > available {fmt_bytes(self.available_bytes)}"


def available_bytes() -> int:
    return int(psutil.virtual_memory().available)


def preflight(config: PointConfig, source_bytes_per_image: float | None = None) -> Preflight:
    """Compare the predicted peak of the client and the engine with the memory available now.

    Without a source size the sources count as nothing, which is the most lenient estimate: a
    point refused then is refused with any source size, and it costs no image generation.
    """
    need = predict(config, source_bytes_per_image or 0.0).system_peak_bytes
    available = available_bytes()
    return Preflight(need <= available, need, available)
