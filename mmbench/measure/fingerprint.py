"""What the renderer produced, in a few comparable figures: the fidelity check between `--renderer
sim` and `--renderer renderers` on the same point (same sources) compares them exactly.

Read from the last step of every trajectory (each turn's sidecar lists every image so far): the
image tokens (placeholder lengths), the prompt length, the distinct pixel_values shapes held, and a
digest of every image's (mm hash, grid, placeholder length) in prompt order. The raw modes have no
hashes or grids on the client: their digest covers the engine's placeholder lengths only.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from mmbench.backends.renderers.state import LibraryStep
from mmbench.record import Rendering
from mmbench.rollout import Step, Trajectory
from mmbench.world.wire import MODALITY


def _images(step: Step) -> list[tuple[str, tuple[int, ...], int, tuple[int, ...] | None]]:
    """(hash, grid, placeholder length, pixel shape or None) of every image the step lists."""
    if isinstance(step, LibraryStep) and step.prompt is not None:
        mm = step.prompt.multi_modal_data
        if mm is None:
            return []
        hashes, spans = mm.mm_hashes.get(MODALITY, []), mm.mm_placeholders.get(MODALITY, [])
        return [
            (
                h,
                _grid(it["image_grid_thw"] if "image_grid_thw" in it else it["grid_thws"]),
                p.length,
                _shape(it.get("pixel_values")),
            )
            for h, p, it in zip(hashes, spans, mm.mm_items.get(MODALITY, []), strict=True)
        ]
    if isinstance(step, LibraryStep) and step.result is not None:
        spans = (step.result.get("mm_placeholders") or {}).get(MODALITY, [])
        return [("", (), int(span["length"]), None) for span in spans]
    if step.placeholders is not None:  # sim raw media: the engine's placeholders
        return [("", (), p.length, None) for p in step.placeholders]
    sc = step.sidecar
    return [
        (h, _grid(it.image_grid_thw), p.length, _shape(it.pixel_values))
        for h, p, it in zip(sc.hashes, sc.placeholders, sc.items, strict=True)
    ]


def _grid(grid: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(grid).ravel())


def _shape(pixels: Any) -> tuple[int, ...] | None:
    return tuple(pixels.shape) if pixels is not None else None


def fingerprint(trajectories: list[Trajectory]) -> Rendering:
    """The rendering section's fingerprint figures (its counts are the driver's: see the worker)."""
    digest = hashlib.sha256()
    tokens = prompt = 0
    shapes: set[tuple[int, ...]] = set()
    for t in trajectories:
        if not t.steps:
            continue
        last = t.steps[-1]
        prompt += last.prompt_len
        for mm_hash, grid, length, _ in _images(last):
            digest.update(f"{mm_hash}|{grid}|{length};".encode())
            tokens += length
        for step in t.steps:
            shapes.update(s for *_, s in _images(step) if s is not None)
    text = ",".join("x".join(map(str, s)) for s in sorted(shapes))
    return Rendering(
        image_tokens=tokens, prompt_tokens=prompt, pixel_shapes=text, sidecar_digest=digest.hexdigest()[:16]
    )
