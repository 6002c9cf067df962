"""The environment's source images: deterministic, distinct per (rollout, turn, index), encoded.

Content kinds set how well a source compresses, because the conversation keeps every encoded
source for the whole rollout (in every mode), and in ephemeral mode that is most of what is left.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from mmbench.errors import MmbenchError

ImageFormat = Literal["png", "jpeg"]
Content = Literal["photo", "noise", "flat"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpeg")
CONTENTS: tuple[str, ...] = ("photo", "noise", "flat")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    width: int
    height: int
    fmt: str = "png"
    content: str = "photo"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fmt not in IMAGE_FORMATS:
            raise MmbenchError(
                f"unknown image format {self.fmt!r}; choose one of: {', '.join(IMAGE_FORMATS)}"
            )
        if self.content not in CONTENTS:
            raise MmbenchError(
                f"unknown image content {self.content!r}; choose one of: {', '.join(CONTENTS)}"
            )


def _pixels(spec: SourceSpec, rng: np.random.Generator) -> np.ndarray:
    h, w = spec.height, spec.width
    if spec.content == "noise":
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if spec.content == "flat":
        colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        return np.broadcast_to(colour, (h, w, 3)).copy()
    # photo: smooth colour gradients and a few soft waves, plus sensor-like noise, which is what
    # makes real photos compress to roughly half their raw size as PNG.
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        a, b, fx, fy, phase = rng.uniform(0.0, 1.0, size=5).astype(np.float32)
        base = 40.0 + 90.0 * a * x + 90.0 * b * y
        base = base + 30.0 * np.sin(6.28 * (1.0 + 3.0 * fx) * x + 6.28 * phase) * np.cos(
            6.28 * (1.0 + 3.0 * fy) * y
        )
        noise = rng.normal(0.0, 6.0, size=(h, w)).astype(np.float32)
        np.clip(base + noise, 0, 255, out=base)
        out[..., c] = base
    return out


def make_source(spec: SourceSpec, rollout: int, turn: int, index: int) -> bytes:
    """The encoded source image for image `index` of turn `turn` of rollout `rollout`."""
    rng = np.random.default_rng([spec.seed, rollout, turn, index])
    array = _pixels(spec, rng)
    # A one-pixel stamp of the coordinates makes flat images distinct too.
    array[0, 0] = (rollout % 256, turn % 256, index % 256)
    array[0, -1] = ((rollout >> 8) % 256, (turn >> 8) % 256, (spec.seed % 256))
    buf = io.BytesIO()
    image = Image.fromarray(array, mode="RGB")
    if spec.fmt == "png":
        # Level 1: near level 6's size on photo-like content at a fraction of the time.
        image.save(buf, format="PNG", compress_level=1)
    else:
        image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class SourceStore:
    """Where the environment's images come from: made on demand, or read back from a directory
    where an earlier point of the same sweep left them (the sources are deterministic, and making
    them is the environment's work, not the client's that mmbench measures).

    With `group_size` G > 1 the rollouts of a group (G consecutive rollouts) share their first
    turn's images, as a GRPO group shares its prompt: rollout r's turn-0 images are its group's
    first rollout's."""

    def __init__(self, spec: SourceSpec, cache_dir: Path | None = None, group_size: int = 1) -> None:
        self.spec = spec
        self.group_size = group_size
        self.dir: Path | None = None
        if cache_dir is not None:
            s = spec
            self.dir = cache_dir / f"{s.width}x{s.height}-{s.fmt}-{s.content}-seed{s.seed}"
            self.dir.mkdir(parents=True, exist_ok=True)

    def owner(self, rollout: int, turn: int) -> int:
        """The rollout whose image this is (the group's first, for a shared first turn)."""
        return rollout - rollout % self.group_size if turn == 0 else rollout

    def _path(self, rollout: int, turn: int, index: int) -> Path | None:
        return None if self.dir is None else self.dir / f"r{rollout}-t{turn}-i{index}.{self.spec.fmt}"

    def ensure(self, rollout: int, turn: int, index: int) -> None:
        """Make and store this source now unless it is stored (with a directory; else nothing)."""
        rollout = self.owner(rollout, turn)
        path = self._path(rollout, turn, index)
        if path is not None and not path.exists():
            self.get(rollout, turn, index)

    def get(self, rollout: int, turn: int, index: int) -> bytes:
        rollout = self.owner(rollout, turn)
        path = self._path(rollout, turn, index)
        if path is None:
            return make_source(self.spec, rollout, turn, index)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            data = make_source(self.spec, rollout, turn, index)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return data
