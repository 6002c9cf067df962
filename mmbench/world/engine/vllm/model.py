"""The model a real vLLM serves for a point: a tiny one mmbench writes for the point's geometry
preset, offline, or the user's directory (`--engine-model DIR`).

The tiny model is written once per preset and vLLM version into mmbench's cache directory
(MMBENCH_CACHE_DIR, else ~/.cache/mmbench) by the vLLM environment's own transformers (the script in
site/mmbench_vllm_model.py), so its config and processor files are the ones vLLM reads. Its image
processor is the preset's (patch, temporal patch, merge, min/max pixels, normalization), its
tokenizer mmbench's vocabulary (mmbench.world.tokens): a 512x512 image becomes the same grid and
placeholder tokens in vLLM as in the simulated world.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mmbench.errors import MmbenchError
from mmbench.world.engine.vllm.env import SITE_DIR, VllmEnv
from mmbench.world.geometry import NAVIT, get_geometry
from mmbench.world.tokens import TEXT_VOCAB, UNK, vocabulary

# Room for the longest prompt a sweep of this machine makes (2048x2048, N = 8 is ~33k tokens); the
# point's own --max-model-len is what vLLM allocates for.
MAX_POSITIONS = 262_144
BUILD_TIMEOUT_S = 300.0
SCRIPT = SITE_DIR / "mmbench_vllm_model.py"


def cache_root() -> Path:
    return Path(os.environ.get("MMBENCH_CACHE_DIR") or Path.home() / ".cache" / "mmbench")


def spec(preset: str) -> dict[str, Any]:
    """Everything the written model depends on (its directory is named by a digest of it)."""
    g = get_geometry(preset)
    special, words = vocabulary(preset)
    geometry: dict[str, Any] = {
        "patch_size": g.patch_size, "temporal_patch_size": g.temporal_patch_size,
        "merge_size": g.merge_size, "min_pixels": g.min_pixels, "max_pixels": g.max_pixels,
        "image_mean": list(g.image_mean), "image_std": list(g.image_std),
    }  # fmt: skip
    if g.resize == NAVIT:  # Kimi K2.5's media_proc_cfg limits
        geometry |= {"max_patches": g.max_patches, "max_patches_per_side": g.max_patches_per_side}
    return {
        "family": preset, "geometry": geometry,
        "text_vocab": TEXT_VOCAB, "special_tokens": special, "template_words": words,
        "unk": UNK, "max_model_len": MAX_POSITIONS,
    }  # fmt: skip


def tiny_model(preset: str, env: VllmEnv) -> Path:
    """The tiny model directory for this preset, written where the cache has none yet."""
    wanted = spec(preset)
    text = json.dumps(wanted, sort_keys=True)
    # what the files depend on: the spec, vLLM's and transformers' versions, and the script itself
    key = text + env.version + (env.transformers or "") + hashlib.sha256(SCRIPT.read_bytes()).hexdigest()
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = cache_root() / "vllm-models" / f"{preset}-{digest}"
    if (target / "mmbench-model.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=target.parent))
    try:
        out = subprocess.run(
            [str(env.python), str(SCRIPT), str(tmp)], input=text, capture_output=True, text=True,
            timeout=BUILD_TIMEOUT_S, env=env.environment(), check=False,
        )  # fmt: skip
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise MmbenchError(f"could not write the tiny {preset} model for vLLM: {tail}")
        try:
            tmp.rename(target)  # atomic: a half-written model is never found
        except OSError:
            if not (target / "mmbench-model.json").is_file():  # not another process's finished copy
                raise
    except subprocess.TimeoutExpired:
        took = f"{BUILD_TIMEOUT_S:.0f} s"
        raise MmbenchError(f"writing the tiny {preset} model for vLLM took more than {took}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_model_dir(directory: str) -> Path:
    """A user's model directory (`--engine-model`): a Hugging Face model with its config."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise MmbenchError(f"--engine-model {directory}: no such directory")
    config = path / "config.json"
    try:
        data = json.loads(config.read_text())
    except OSError:
        raise MmbenchError(
            f"--engine-model {directory}: no config.json there (a Hugging Face model directory)"
        ) from None
    except ValueError:
        raise MmbenchError(f"--engine-model {directory}: config.json is not valid JSON") from None
    if not isinstance(data, dict) or not data.get("architectures"):
        raise MmbenchError(f"--engine-model {directory}: config.json names no architectures")
    return path.resolve()
