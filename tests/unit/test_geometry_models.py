"""The presets of issue 32: qwen3.5 and qwen3.6 (Qwen3-VL's processor) and kimi-k2.5 (its own NaViT
geometry), each against its model's real processor where transformers builds it offline, else
against the rule as its public sources state it (docs/models.md says which)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmbench.world.geometry import HALF, KIMI_GRID_KEY, MODELS, NAVIT, QWEN_GRID_KEY, get_geometry, grid_key
from mmbench.world.renderer import preprocess

QWEN3_FAMILY = ("qwen3-vl", "qwen3.5", "qwen3.6")
KIMI = get_geometry("kimi-k2.5")
# The same cases as test_geometry's processor comparison, then the sizes the docs quote.
CASES = [(56, 56), (84, 112), (65, 97), (333, 777), (300, 120), (512, 512), (1024, 1024), (2048, 2048)]
# renderers' KimiK25ImageLayoutSpec (renderers/image_layout_specs.py in the library's repository,
# the contract prime-rl's Kimi adapter checks the checkpoint's media_proc_cfg against)
KIMI_LAYOUT_SPEC = {
    "patch_size": 14, "merge_kernel_size": 2, "in_patch_limit": 16_384, "patch_limit_on_one_side": 512,
    "fixed_output_tokens": None, "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5),
}  # fmt: skip


def _rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def test_qwen35_and_qwen36_take_qwen3_vls_processor_constants() -> None:
    qwen3 = get_geometry("qwen3-vl")
    for name in ("qwen3.5", "qwen3.6"):
        g = get_geometry(name)
        assert (g.patch_size, g.temporal_patch_size, g.merge_size) == (16, 2, 2)
        assert (g.min_pixels, g.max_pixels) == (65_536, 16_777_216)
        assert g.image_mean == g.image_std == HALF
        assert (g.resize, g.grid_key, g.single_placeholder) == (qwen3.resize, QWEN_GRID_KEY, False)


def test_kimi_preset_is_the_librarys_layout_spec() -> None:
    k = KIMI
    spec = KIMI_LAYOUT_SPEC
    assert (k.patch_size, k.merge_size) == (spec["patch_size"], spec["merge_kernel_size"])
    assert (k.max_patches, k.max_patches_per_side) == (
        spec["in_patch_limit"],
        spec["patch_limit_on_one_side"],
    )
    assert (k.image_mean, k.image_std) == (spec["image_mean"], spec["image_std"])
    assert k.resize == NAVIT and k.temporal_patch_size == 1 and k.patch_dim == 3 * 14 * 14
    assert k.grid_key == grid_key("kimi-k2.5") == KIMI_GRID_KEY == "grid_thws"
    assert k.single_placeholder
    assert grid_key("someone-elses-model") == QWEN_GRID_KEY


# docs/models.md's table: (model, side) -> resized (before padding), grid, pixel_values shape, bytes,
# the model's tokens, placeholder tokens in the prompt
@pytest.mark.parametrize(
    ("model", "side", "resized", "grid", "shape", "nbytes", "tokens", "placeholders"),
    [
        *[
            (m, s, s, (1, g, g), (g * g, 1536), g * g * 1536 * 4, g * g // 4, g * g // 4)
            for m in ("qwen3.5", "qwen3.6")
            for s, g in ((512, 32), (1024, 64), (2048, 128))
        ],
        ("kimi-k2.5", 512, 512, (1, 38, 38), (1444, 3, 14, 14), 3_396_288, 361, 1),
        ("kimi-k2.5", 1024, 1024, (1, 74, 74), (5476, 3, 14, 14), 12_879_552, 1_369, 1),
        # 2048 // 14 = 146 patches a side: scaled by sqrt(16384 / 146^2) to 1795, padded to 1820
        ("kimi-k2.5", 2048, 1795, (1, 130, 130), (16900, 3, 14, 14), 39_748_800, 4_225, 1),
    ],
)  # fmt: skip
def test_models_table(
    model: str, side: int, resized: int, grid: tuple[int, int, int], shape: tuple[int, ...], nbytes: int,
    tokens: int, placeholders: int,
) -> None:  # fmt: skip
    layout = get_geometry(model).layout(side, side)
    assert (layout.resized_height, layout.resized_width) == (resized, resized)
    assert layout.grid_thw == grid
    assert layout.pixel_shape == shape
    assert layout.pixel_bytes() == nbytes
    assert (layout.tokens, layout.placeholder_tokens) == (tokens, placeholders)


def _qwen3_processor() -> Any:
    """The image processor transformers resolves for model_type qwen3_5 (and qwen3_vl) without
    torchvision, configured as Qwen3-VL's / Qwen3.5's public preprocessor_config.json."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = {IMAGE_PROCESSOR_MAPPING_NAMES[t]["pil"] for t in ("qwen3_vl", "qwen3_5", "qwen3_5_moe")}
    assert names == {"Qwen2VLImageProcessorPil"}  # one processor for the three model types
    cls = getattr(transformers, names.pop())
    return cls(
        patch_size=16, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 65_536, "longest_edge": 16_777_216}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip


@pytest.mark.parametrize("model", QWEN3_FAMILY)
def test_qwen3_family_matches_the_real_processor(model: str) -> None:
    processor = _qwen3_processor()
    geo = get_geometry(model)
    for width, height in CASES:
        image = _rgb(width, height, seed=width + height)
        expected = processor(images=[image], return_tensors="np")
        hf_pixels, hf_grid = np.asarray(expected["pixel_values"]), np.asarray(expected["image_grid_thw"])
        layout = geo.layout(width, height)
        assert hf_pixels.shape == layout.pixel_shape, (width, height)
        assert tuple(hf_grid[0].tolist()) == layout.grid_thw
        assert layout.tokens == hf_grid.prod() // geo.merge_size**2
        pixel_values, grid = preprocess(image, geo)
        assert np.array_equal(grid, hf_grid)
        # resampled or not, the values agree to bicubic rounding; unresampled, to float rounding
        exact = (layout.resized_width, layout.resized_height) == (width, height)
        np.testing.assert_allclose(pixel_values, hf_pixels, atol=1e-5 if exact else 0.05)


def _transformers_navit_resize() -> Callable[..., tuple[tuple[int, int], tuple[int, int]]]:
    """transformers' own Kimi K2.5 `navit_resize`, taken from its installed source: the module
    imports torchvision at its top, which this environment does not have, so only the function (pure
    Python: math) is compiled and run."""
    transformers = pytest.importorskip("transformers")
    path = Path(transformers.__file__).parent / "models" / "kimi_k25" / "image_processing_kimi_k25.py"
    if not path.exists():
        pytest.skip(f"transformers {transformers.__version__} has no Kimi K2.5 image processor")
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "navit_resize")
    namespace: dict[str, Any] = {"math": math}
    exec(compile(ast.Module([fn], []), str(path), "exec"), namespace)
    return namespace["navit_resize"]  # type: ignore[no-any-return]


KIMI_CASES = [
    *CASES, (1, 1), (13, 13), (14, 14), (28, 28), (29, 29), (4000, 3000), (7168, 7168), (7200, 100),
    (100, 7200), (32_768, 200), (1792, 1792), (1793, 1793), (1806, 1806), (3000, 3000),
]  # fmt: skip


def test_kimi_layout_matches_transformers_navit_resize() -> None:
    navit = _transformers_navit_resize()
    for width, height in KIMI_CASES:
        (h, w), (ph, pw) = navit(height, width, patch_size=14, merge_kernel_size=2, max_patches=16_384,
                                 max_size_per_side=512)  # fmt: skip
        layout = KIMI.layout(width, height)
        assert (layout.resized_height, layout.resized_width) == (h, w), (width, height)
        assert (h + layout.pad_height, w + layout.pad_width) == (ph, pw)
        assert layout.grid_thw == (1, ph // 14, pw // 14)
        assert layout.tokens == (ph // 28) * (pw // 28)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(1, 20_000), height=st.integers(1, 20_000))
def test_kimi_navit_property(width: int, height: int) -> None:
    if max(width, height) / min(width, height) > 200:
        return
    layout = KIMI.layout(width, height)
    h, w = layout.resized_height, layout.resized_width
    assert 1 <= h <= height and 1 <= w <= width  # never upscaled
    assert h <= 512 * 14 and w <= 512 * 14
    assert 0 <= layout.pad_height < 28 and 0 <= layout.pad_width < 28
    _, gh, gw = layout.grid_thw
    assert (h + layout.pad_height) == gh * 14 and (w + layout.pad_width) == gw * 14
    assert gh % 2 == gw % 2 == 0 and gh <= 512 and gw <= 512
    assert layout.tokens * 4 == gh * gw and layout.placeholder_tokens == 1
    # the truncation and padding can pass the patch budget, by less than a padded row and column
    assert gh * gw <= 16_384 + 2 * 28 // 14 * (gh + gw) + 16


@pytest.mark.parametrize(
    ("width", "height"), [(56, 56), (84, 112), (65, 97), (333, 777), (300, 120), (512, 512)]
)
def test_kimi_preprocess_pads_normalizes_and_patchifies(width: int, height: int) -> None:
    image = _rgb(width, height, seed=width)
    layout = KIMI.layout(width, height)
    pixel_values, grid = preprocess(image, KIMI)
    assert pixel_values.dtype == np.float32 and pixel_values.shape == layout.pixel_shape
    assert grid.dtype == np.int64 and tuple(grid[0]) == layout.grid_thw
    _, gh, gw = layout.grid_thw
    # reassemble the padded image from its patches: the resized image, then zeros (-1 normalized)
    full = pixel_values.reshape(gh, gw, 3, 14, 14).transpose(0, 3, 1, 4, 2).reshape(gh * 14, gw * 14, 3)
    h, w = layout.resized_height, layout.resized_width
    resized = np.asarray(image.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    np.testing.assert_allclose(full[:h, :w], (resized / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert (full[h:] == -1.0).all() and (full[:, w:] == -1.0).all()


def test_every_preset_has_a_geometry_and_the_error_lists_them() -> None:
    assert {"qwen3-vl", "qwen2-vl", "qwen3.5", "qwen3.6", "kimi-k2.5"} == set(MODELS)
