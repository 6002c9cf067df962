"""Each preset's renderer in the `renderers` library (0.1.12), and the Kimi K2.5 image processor
mmbench builds for it offline.

- qwen3-vl (and qwen2-vl, which the library has no renderer of its own for): `Qwen3VLRenderer`.
- qwen3.5: `Qwen35Renderer`; qwen3.6: `Qwen36Renderer` (Qwen3.5's, with Qwen3.6's tool-argument
  serialization). Both take Qwen3-VL's processor (transformers' Qwen2-VL image processor, patch 16).
- kimi-k2.5: `KimiK25Renderer`: one `<|media_pad|>` per image, items of `pixel_values` and
  `grid_thws`. Its processor is custom code in the model's repository (`trust_remote_code`), so
  mmbench supplies `KimiImageProcessor`: the same interface (`preprocess(medias, return_tensors)`,
  `media_tokens_calculator(media)`) and the same arithmetic as vLLM's own port
  (`KimiK25FusedVisionProcessor`, which tests/vllm compares it with) and Moonshot's media_utils.
Each renderer is configured with the library's defaults but for `image_cache_max`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from renderers.configs import (
    KimiK25RendererConfig,
    Qwen3VLRendererConfig,
    Qwen35RendererConfig,
    Qwen36RendererConfig,
)
from renderers.kimi_k25 import KimiK25Renderer
from renderers.qwen3_vl import Qwen3VLRenderer
from renderers.qwen35 import Qwen35Renderer
from renderers.qwen36 import Qwen36Renderer

from mmbench.world.geometry import Geometry

# preset -> (the library's renderer class, its config class)
RENDERERS: dict[str, tuple[type[Any], type[Any]]] = {
    "qwen3-vl": (Qwen3VLRenderer, Qwen3VLRendererConfig),
    "qwen2-vl": (Qwen3VLRenderer, Qwen3VLRendererConfig),
    "qwen3.5": (Qwen35Renderer, Qwen35RendererConfig),
    "qwen3.6": (Qwen36Renderer, Qwen36RendererConfig),
    "kimi-k2.5": (KimiK25Renderer, KimiK25RendererConfig),
}


def renderer_class(model: str) -> tuple[type[Any], type[Any]]:
    return RENDERERS[model]


class KimiImageProcessor:
    """Kimi K2.5's image processor, image-only: NaViT resize (PIL bicubic), zero padding to a
    multiple of patch x merge, x / 255 in float32, minus the mean, times 1 / std, then patches of
    (C, P, P) in row-major grid order; `grid_thws` (n, 3) int64."""

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        # the fields of the checkpoint's preprocessor_config.json that images use (media_proc_cfg)
        self.media_proc_cfg = {
            "patch_size": geometry.patch_size, "merge_kernel_size": geometry.merge_size,
            "in_patch_limit": geometry.max_patches, "patch_limit_on_one_side": geometry.max_patches_per_side,
            "fixed_output_tokens": None, "image_mean": list(geometry.image_mean),
            "image_std": list(geometry.image_std),
        }  # fmt: skip
        self.merge_size = geometry.merge_size

    @staticmethod
    def _image(media: dict[str, Any]) -> Image.Image:
        if media.get("type", "image") != "image":
            raise ValueError(f"only images are supported, got media type {media.get('type')!r}")
        image = media["image"]
        return image if image.mode == "RGB" else image.convert("RGB")

    def media_tokens_calculator(self, media: dict[str, Any]) -> int:
        return self.geometry.layout(*self._image(media).size).tokens

    def preprocess(
        self, medias: list[dict[str, Any]] | dict[str, Any], return_tensors: Any = None
    ) -> dict[str, Any]:
        del return_tensors  # numpy, as the library asks for ("np")
        medias = medias if isinstance(medias, list) else [medias]
        mean = np.asarray(self.geometry.image_mean)
        std_inv = 1.0 / np.asarray(self.geometry.image_std)
        p = self.geometry.patch_size
        pixels, grids = [], []
        for media in medias:
            image = self._image(media)
            layout = self.geometry.layout(*image.size)
            arr = np.asarray(
                image.resize((layout.resized_width, layout.resized_height), Image.Resampling.BICUBIC)
            )
            arr = np.pad(arr, ((0, layout.pad_height), (0, layout.pad_width), (0, 0)))[None]
            x = (arr / 255.0).astype(np.float32)
            x -= mean
            x *= std_inv
            t, h, w, c = x.shape
            patches = x.reshape(t, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4).reshape(-1, c, p, p)
            pixels.append(patches)
            grids.append([t, h // p, w // p])
        pixel_values = pixels[0] if len(pixels) == 1 else np.concatenate(pixels)
        return {
            "pixel_values": np.ascontiguousarray(pixel_values),
            "grid_thws": np.array(grids, dtype=np.int64),
        }
