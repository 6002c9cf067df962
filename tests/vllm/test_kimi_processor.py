"""Kimi K2.5's preset against vLLM's own Kimi K2.5 image processor (`KimiK25FusedVisionProcessor`,
which vLLM 0.32 uses for the model whenever numba is installed), run in the vLLM environment's
interpreter: Kimi's processor is remote code in the model's repository, and this is the one
implementation of it that runs here offline. Sizes, grids, tokens and pixels on the geometry tests'
cases. No vLLM server is started (a few seconds)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmbench.backends.renderers.models import KimiImageProcessor
from mmbench.world.engine.vllm.env import find_vllm
from mmbench.world.geometry import get_geometry
from mmbench.world.renderer import preprocess

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]
KIMI = get_geometry("kimi-k2.5")
CASES = [(56, 56), (84, 112), (65, 97), (333, 777), (300, 120), (512, 512), (1024, 1024), (2048, 2048)]
PROBE = """
import json, sys
import numpy as np
from PIL import Image
from vllm.transformers_utils.processors.kimi_k25_vision_fused import KimiK25FusedVisionProcessor
cfg = {"in_patch_limit": 16384, "patch_size": 14, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
       "merge_kernel_size": 2, "fixed_output_tokens": None, "patch_limit_on_one_side": 512,
       "in_patch_limit_each_frame": 4096, "in_patch_limit_video": None, "temporal_merge_kernel_size": 4}
proc = KimiK25FusedVisionProcessor(cfg)
out = {}
for i, path in enumerate(json.loads(sys.argv[2])):
    media = {"type": "image", "image": Image.open(path).convert("RGB")}
    r = proc.preprocess([dict(media)], return_tensors="np")
    out[f"pv{i}"], out[f"grid{i}"] = np.asarray(r["pixel_values"]), np.asarray(r["grid_thws"])
    out[f"tok{i}"] = np.array(proc.media_tokens_calculator(dict(media)))
np.savez(sys.argv[1], **out)
"""


def _rgb(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def test_kimi_preset_matches_vllms_own_kimi_processor(tmp_path: Path) -> None:
    env = find_vllm()
    paths = []
    for w, h in CASES:
        path = tmp_path / f"{w}x{h}.png"
        _rgb(w, h, w + h).save(path)
        paths.append(str(path))
    out = tmp_path / "vllm.npz"
    run = subprocess.run(
        [str(env.python), "-c", PROBE, str(out), json.dumps(paths)], env=env.environment(),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.load(out)
    port = KimiImageProcessor(KIMI)
    for i, ((w, h), path) in enumerate(zip(CASES, paths, strict=True)):
        image = Image.open(path).convert("RGB")
        layout = KIMI.layout(w, h)
        vllm_pixels, vllm_grid = got[f"pv{i}"], got[f"grid{i}"]
        assert vllm_pixels.shape == layout.pixel_shape, (w, h)
        assert tuple(vllm_grid[0].tolist()) == layout.grid_thw
        assert int(got[f"tok{i}"]) == layout.tokens
        sim, grid = preprocess(image, KIMI)
        assert np.array_equal(grid, vllm_grid)
        # vLLM normalizes through a float32 lookup table, Moonshot's code (and mmbench) by arithmetic
        np.testing.assert_allclose(sim, vllm_pixels, atol=1e-6)
        lib = port.preprocess([{"type": "image", "image": image}], return_tensors="np")
        np.testing.assert_allclose(lib["pixel_values"], vllm_pixels, atol=1e-6)
        assert port.media_tokens_calculator({"type": "image", "image": image}) == layout.tokens
