"""Image geometry of the Qwen-VL family: smart_resize, grid, pixel_values shape, tokens.

The presets follow the public processors (Qwen2-VL and Qwen3-VL/Qwen3.5); see
docs domain.md section 3 for the figures the tests pin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmbench.errors import MmbenchError

MAX_ASPECT_RATIO = 200
# A practical bound on a source side: beyond it the source image itself (not the model) is the problem.
MAX_SOURCE_SIDE = 32_768
# OpenAI CLIP's per-channel statistics, which Qwen2-VL's public processor normalizes with; Qwen3-VL's
# uses mean = std = 0.5. Sizes do not depend on them; pixel values and their checksums do.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class Geometry:
    """A model family's vision preprocessing constants."""

    name: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    channels: int = 3
    image_mean: tuple[float, float, float] = CLIP_MEAN  # per channel, after rescaling to [0, 1]
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Width of one pixel_values row: C x T x P x P."""
        return self.channels * self.temporal_patch_size * self.patch_size * self.patch_size

    def smart_resize(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def layout(self, width: int, height: int) -> ImageLayout:
        """Everything the processor output's shape depends on, for a width x height source."""
        h, w = self.smart_resize(height, width)
        grid_h, grid_w = h // self.patch_size, w // self.patch_size
        rows = grid_h * grid_w
        return ImageLayout(
            resized_height=h,
            resized_width=w,
            grid_thw=(1, grid_h, grid_w),
            pixel_shape=(rows, self.patch_dim),
            tokens=rows // (self.merge_size**2),
        )


@dataclass(frozen=True, slots=True)
class ImageLayout:
    resized_height: int
    resized_width: int
    grid_thw: tuple[int, int, int]
    pixel_shape: tuple[int, int]
    tokens: int

    def pixel_bytes(self, itemsize: int = 4) -> int:
        return self.pixel_shape[0] * self.pixel_shape[1] * itemsize


MODELS: dict[str, Geometry] = {
    "qwen3-vl": Geometry("qwen3-vl", 16, 2, 2, 65_536, 16_777_216, image_mean=HALF, image_std=HALF),
    "qwen2-vl": Geometry("qwen2-vl", 14, 2, 2, 3_136, 1_003_520),
}
DEFAULT_MODEL = "qwen3-vl"


def get_geometry(name: str) -> Geometry:
    try:
        return MODELS[name]
    except KeyError:
        raise MmbenchError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


def validate_source_size(width: int, height: int) -> None:
    """Raise a clear error for a source the processors refuse (or that is absurd)."""
    for side_name, side in (("width", width), ("height", height)):
        if side <= 0:
            raise MmbenchError(f"image {side_name} must be > 0, got {side}")
        if side > MAX_SOURCE_SIDE:
            raise MmbenchError(
                f"image {side_name} {side} is beyond the supported {MAX_SOURCE_SIDE}; "
                "use a smaller --image-size"
            )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise MmbenchError(
            f"image {width}x{height} has aspect ratio {ratio:.1f}; at most {MAX_ASPECT_RATIO} is allowed"
        )


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Round both sides to multiples of `factor`, keeping the area within [min_pixels, max_pixels]."""
    validate_source_size(width, height)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def parse_image_size(text: str | int) -> tuple[int, int]:
    """'512' -> (512, 512); '1200x300' -> (1200, 300) as (width, height)."""
    raw = str(text).strip().lower()
    parts = raw.split("x")
    try:
        if len(parts) == 1:
            w = h = int(parts[0])
        elif len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise MmbenchError(f"image size {text!r} is not a side (512) or WIDTHxHEIGHT (1200x300)") from None
    validate_source_size(w, h)
    return w, h
