"""The models side by side (`mmbench report` on points of several `--model` presets): markdown and
the terminal table share these cells."""

from __future__ import annotations

from mmbench.analysis.models import ModelRow
from mmbench.units import fmt_bytes

HEADING = "Models: each mode's retained slope per model against its floor"
HEADER = ["mode", "model", "image (float32 pixels)", "slope / rollout", "expected", "ratio", "K fitted",
          "shipped / rollout"]  # fmt: skip
NOTE = (
    "slope: retained (live) memory per rollout, least squares over K; expected: what one rollout's "
    "trajectory holds (the ledger's floor) once the renderer caches are full, else the model's slope "
    "(a cache still filling); ratio: slope / expected, `-` where the growth expected over the K "
    "fitted stays below the 2 MiB noise floor of RSS readings. image: one image's float32 "
    "pixel_values in this model's layout; shipped: bytes shipped per rollout at the largest K. "
    "docs/models.md has each preset's geometry."
)


def _bytes(value: float | None) -> str:
    return "-" if value is None else fmt_bytes(round(value))


def rows(models: tuple[ModelRow, ...]) -> list[list[str]]:
    out = []
    for r in models:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        expected = f"{_bytes(r.expected)} ({r.against})"
        out.append([r.mode, r.model, _bytes(r.pixel_bytes_per_image), _bytes(r.slope), expected, ratio,
                    f"{r.k_from}-{r.k_to}", _bytes(r.shipped_per_rollout)])  # fmt: skip
    return out


def markdown(models: tuple[ModelRow, ...], level: str) -> list[str]:
    if not models:
        return []
    lines = [f"{level} {HEADING}", "", "| " + " | ".join(HEADER) + " |"]
    lines.append("| --- | --- | " + " | ".join("---:" for _ in HEADER[2:]) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(models)]
    return [*lines, "", NOTE, ""]
