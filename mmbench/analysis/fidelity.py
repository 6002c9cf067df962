"""Fidelity: the same points under `--renderer sim` and `--renderer renderers`, side by side.

Points are paired by every parameter but the renderer (and the tokenizer, which only the library
takes) and by repeat. What the renderer produced is compared exactly (image tokens, pixel shapes,
the digest of every image's hash, grid and placeholder); what it costs is compared as ratios
renderers / sim (retained live, peak, bytes shipped). Built once from a results file for every
reporter; nothing is re-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from mmbench.config import field_names
from mmbench.results import PointRecord
from mmbench.transports.registry import MODES
from mmbench.units import RSS_NOISE_FLOOR_BYTES

# The figures compared as ratios renderers / sim, by their dotted paths.
COST_FIELDS = ("client.retained_live_bytes", "client.peak_bytes", "traffic.bytes_shipped")
MEMORY_FIELDS = ("client.retained_live_bytes", "client.peak_bytes")

PAIRED_BY_NOT = ("renderer", "tokenizer")


@dataclass(frozen=True, slots=True)
class FidelityRow:
    mode: str
    rollouts: int
    params: tuple[tuple[str, object], ...]  # the pair's other parameters that vary in the results
    repeat: int
    sim: PointRecord
    lib: PointRecord

    @property
    def same_images(self) -> bool | None:
        """Equal image tokens, pixel shapes and sidecar digest (None where either lacks them)."""
        a, b = self.sim.client.rendering, self.lib.client.rendering
        if a.sidecar_digest is None or b.sidecar_digest is None:
            return None
        return (a.image_tokens, a.pixel_shapes, a.sidecar_digest) == (
            b.image_tokens,
            b.pixel_shapes,
            b.sidecar_digest,
        )

    def to_dict(self) -> dict[str, object]:
        sim, lib = self.sim.client.rendering, self.lib.client.rendering
        out: dict[str, object] = {
            "mode": self.mode, "rollouts": self.rollouts, "params": dict(self.params), "repeat": self.repeat,
            "same_images": self.same_images, "image_tokens": [sim.image_tokens, lib.image_tokens],
            "prompt_tokens": [sim.prompt_tokens, lib.prompt_tokens],
            "pixel_shapes": [sim.pixel_shapes, lib.pixel_shapes],
        }  # fmt: skip
        for path in COST_FIELDS:
            name = path.rpartition(".")[2]  # retained_live_bytes, peak_bytes, bytes_shipped
            out[name] = [attrgetter(path)(self.sim), attrgetter(path)(self.lib)]
            out[f"{name}_ratio"] = self.ratio(path)
        return out

    def ratio(self, path: str) -> float | None:
        """renderers / sim of a figure (its dotted path); None where either is unknown, or (memory)
        below the noise floor of RSS readings, where a ratio says nothing."""
        a, b = attrgetter(path)(self.sim), attrgetter(path)(self.lib)
        if a is None or b is None or a == 0:
            return None
        if path in MEMORY_FIELDS and min(a, b) < RSS_NOISE_FLOOR_BYTES:
            return None
        return float(b / a)


def fidelity_rows(records: list[PointRecord]) -> list[FidelityRow]:
    """Every (sim, renderers) pair of measured points with the same other parameters and repeat."""
    keys = [k for k in field_names() if k not in PAIRED_BY_NOT]
    ok = [r for r in records if r.status == "ok"]
    sims = {(*(getattr(r.config, k) for k in keys), r.repeat): r for r in ok if r.config.renderer == "sim"}
    varying = [
        k for k in keys if k not in ("mode", "rollouts") and len({getattr(r.config, k) for r in ok}) > 1
    ]
    rows = []
    for lib in ok:
        if lib.config.renderer != "renderers":
            continue
        sim = sims.get((*(getattr(lib.config, k) for k in keys), lib.repeat))
        if sim is not None:
            params = tuple((k, getattr(lib.config, k)) for k in varying)
            rows.append(FidelityRow(lib.config.mode, lib.config.rollouts, params, lib.repeat, sim, lib))
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(rows, key=lambda r: (str(r.params), order.get(r.mode, len(order)), r.rollouts, r.repeat))
