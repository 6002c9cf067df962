"""Image geometry of each model preset: resize rule, grid, pixel_values shape, tokens.

The presets follow the public processors; see docs domain.md section 3 and docs/models.md for the
figures the tests pin:
- Qwen2-VL, Qwen3-VL, Qwen3.5 and Qwen3.6 (the last two use Qwen3-VL's processor, transformers'
  `Qwen2VLImageProcessor` with patch 16): `smart_resize`, pixel rows of C x T x P x P, one
  `<|image_pad|>` per merged patch in the prompt.
- Kimi K2.5: `navit_resize` (Moonshot's `navit_resize_image`, as vLLM, transformers and the
  renderers library's `KimiK25ImageLayoutSpec` state it): scale down (never up) to at most 16,384
  patches and 512 per side, truncate, pad with zeros to a multiple of patch x merge; pixel_values
  of shape (patches, C, P, P), the grid under the key `grid_thws`, and one `<|media_pad|>` per image
  in the prompt, which the engine expands to patches / merge^2 tokens.
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


SMART, NAVIT = "smart", "navit"  # Qwen-VL's smart_resize; Kimi's navit_resize (scale down, pad)
QWEN_GRID_KEY, KIMI_GRID_KEY = "image_grid_thw", "grid_thws"


@dataclass(frozen=True, slots=True)
class Geometry:
    """A model's vision preprocessing constants."""

    name: str
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    channels: int = 3
    image_mean: tuple[float, float, float] = CLIP_MEAN  # per channel, after rescaling to [0, 1]
    image_std: tuple[float, float, float] = CLIP_STD
    resize: str = SMART
    # navit only: the patch budget per image (in_patch_limit) and per side (patch_limit_on_one_side)
    max_patches: int = 0
    max_patches_per_side: int = 0
    grid_key: str = QWEN_GRID_KEY  # the item's grid under this key (the processor's own name)
    # True: the prompt holds one placeholder per image and the engine expands it (Kimi); False: the
    # prompt holds every image token already (Qwen-VL: grid / merge^2 pads)
    single_placeholder: bool = False

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
        if self.resize == NAVIT:
            h, w, pad_h, pad_w = navit_resize(
                height, width, self.patch_size, self.merge_size, self.max_patches, self.max_patches_per_side
            )
        else:
            h, w = self.smart_resize(height, width)
            pad_h = pad_w = 0
        grid_h, grid_w = (h + pad_h) // self.patch_size, (w + pad_w) // self.patch_size
        rows = grid_h * grid_w
        p = self.patch_size
        shape = (rows, self.channels, p, p) if self.resize == NAVIT else (rows, self.patch_dim)
        tokens = rows // (self.merge_size**2)
        return ImageLayout(
            resized_height=h,
            resized_width=w,
            grid_thw=(1, grid_h, grid_w),
            pixel_shape=shape,
            tokens=tokens,
            pad_height=pad_h,
            pad_width=pad_w,
            placeholder_tokens=1 if self.single_placeholder else tokens,
        )


@dataclass(frozen=True, slots=True)
class ImageLayout:
    resized_height: int  # the resized image (before any padding)
    resized_width: int
    grid_thw: tuple[int, int, int]
    pixel_shape: tuple[int, ...]  # (rows, C*T*P*P) for Qwen-VL; (patches, C, P, P) for Kimi
    tokens: int  # the model's tokens for this image (grid / merge^2): what the engine expands to
    pad_height: int = 0  # zeros below and right of the resized image (Kimi pads to patch x merge)
    pad_width: int = 0
    placeholder_tokens: int = -1  # placeholder tokens in the client's prompt (-1: `tokens`)

    def __post_init__(self) -> None:
        if self.placeholder_tokens < 0:
            object.__setattr__(self, "placeholder_tokens", self.tokens)

    def pixel_bytes(self, itemsize: int = 4) -> int:
        return math.prod(self.pixel_shape) * itemsize


def _qwen3_vl_processor(name: str) -> Geometry:
    """Qwen3-VL's public processor (preprocessor_config.json: patch 16, temporal 2, merge 2, size
    shortest_edge 65,536 / longest_edge 16,777,216, mean = std = 0.5), which Qwen3.5 and Qwen3.6 use
    too (transformers maps model_type qwen3_5 to Qwen3VLProcessor and Qwen2VLImageProcessor)."""
    return Geometry(name, 16, 2, 2, 65_536, 16_777_216, image_mean=HALF, image_std=HALF)


MODELS: dict[str, Geometry] = {
    "qwen3-vl": _qwen3_vl_processor("qwen3-vl"),
    "qwen2-vl": Geometry("qwen2-vl", 14, 2, 2, 3_136, 1_003_520),
    "qwen3.5": _qwen3_vl_processor("qwen3.5"),
    "qwen3.6": _qwen3_vl_processor("qwen3.6"),
    # KimiK25ImageLayoutSpec (renderers): patch 14, merge kernel 2, in_patch_limit 16,384,
    # patch_limit_on_one_side 512, no fixed_output_tokens, mean = std = 0.5. No temporal patch
    # for a still image (grid t = 1, each row one C x P x P patch).
    "kimi-k2.5": Geometry(
        "kimi-k2.5", 14, 1, 2, 0, 0, image_mean=HALF, image_std=HALF, resize=NAVIT,
        max_patches=16_384, max_patches_per_side=512, grid_key=KIMI_GRID_KEY, single_placeholder=True,
    ),
}  # fmt: skip
DEFAULT_MODEL = "qwen3-vl"


def grid_key(model: str) -> str:
    """The item's grid key for this model (an unknown name, e.g. an external engine's: Qwen-VL's)."""
    geometry = MODELS.get(model)
    return geometry.grid_key if geometry is not None else QWEN_GRID_KEY


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


def navit_resize(
    height: int, width: int, patch: int, merge: int, max_patches: int, max_per_side: int
) -> tuple[int, int, int, int]:
    """Kimi K2.5's NaViT resize (Moonshot's `navit_resize_image`, the same in vLLM's and
    transformers' ports): (height, width, pad_height, pad_width). The scale is the smallest of 1 (never
    upscale), sqrt(max_patches / whole patches) and each side's patch limit; each side is truncated
    (`int`), capped at max_per_side patches, then padded with zeros up to a multiple of patch x merge.
    The truncation and the padding can take the grid past max_patches (2048x2048: 130x130 = 16,900)."""
    validate_source_size(width, height)
    scale = min(
        1.0,
        math.sqrt(max_patches / (max(1.0, width // patch) * max(1.0, height // patch))),
        max_per_side * patch / width,
        max_per_side * patch / height,
    )
    new_w = min(max(1, int(width * scale)), max_per_side * patch)
    new_h = min(max(1, int(height * scale)), max_per_side * patch)
    factor = merge * patch
    return new_h, new_w, (factor - new_h % factor) % factor, (factor - new_w % factor) % factor


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
