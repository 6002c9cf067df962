"""The fidelity section's text: sim against the renderers library on the same points (markdown and
the terminal table share it)."""

from __future__ import annotations

from operator import attrgetter

from mmbench.analysis.fidelity import COST_FIELDS, FidelityRow
from mmbench.units import fmt_bytes

HEADING = "Fidelity: sim against the renderers library"
HEADER = [
    "mode", "K", "images", "image tokens", "retained live sim", "renderers", "ratio", "peak sim", "renderers",
    "ratio", "shipped sim", "renderers", "ratio",
]  # fmt: skip
NOTE = (
    "Pairs of points that differ only in --renderer. images: `same` when the image tokens, the "
    "pixel_values shapes held and the digest of every image's mm hash, grid and placeholder are equal "
    "(raw modes: the engine's placeholders only). Ratios are renderers / sim; docs/renderers.md's Fidelity "
    "section explains each difference by a measured cause."
)


def _images(row: FidelityRow) -> str:
    same = row.same_images
    return "-" if same is None else "same" if same else "DIFFER"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _bytes(value: int | None) -> str:
    return "-" if value is None else fmt_bytes(value)


def rows(fidelity: tuple[FidelityRow, ...]) -> list[list[str]]:
    out = []
    for r in fidelity:
        params = ", ".join(f"{k}={v}" for k, v in r.params)
        mode = f"{r.mode} ({params})" if params else r.mode
        sim, lib = r.sim.client.rendering.image_tokens, r.lib.client.rendering.image_tokens
        tokens = lib if r.same_images else f"{sim} / {lib}"
        cells = [mode, str(r.rollouts), _images(r), str(tokens)]
        for path in COST_FIELDS:
            read = attrgetter(path)
            cells += [_bytes(read(r.sim)), _bytes(read(r.lib)), _ratio(r.ratio(path))]
        out.append(cells)
    return out


def markdown(fidelity: tuple[FidelityRow, ...], level: str) -> list[str]:
    if not fidelity:
        return []
    lines = [f"{level} {HEADING}", "", "| " + " | ".join(HEADER) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in HEADER[1:]) + " |")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(fidelity)]
    return [*lines, "", NOTE, ""]
