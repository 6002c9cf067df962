"""The library's objects, built offline: a tokenizer, the image processor of a geometry preset, and
a pool of the library's renderers.

Nothing here touches the network. The tokenizer is built in code (a `tokenizers` WordLevel model
wrapped in `transformers.PreTrainedTokenizerFast`) with the special tokens the renderer looks up at
Qwen's ids, or loaded from a local directory (`--tokenizer DIR`, `local_files_only`). The processor
is any object whose `image_processor` is transformers' Qwen2-VL image processor configured from the
preset (patch, temporal patch, merge, min/max pixels) with the public processor's normalization.

renderers 0.1.12 ships no RendererPool class: the pool factory's semantics (pool_size renderer
instances, each with its own FIFO image cache bounded by `image_cache_max` through the library's
config, one checked out per render) are emulated with mmbench's Pool around the library's objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# Before transformers is imported: never look anything up on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from renderers.qwen3_vl import Qwen3VLRenderer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmbench.backends.renderers.models import KimiImageProcessor, renderer_class
from mmbench.errors import MmbenchError
from mmbench.world.geometry import DEFAULT_MODEL, NAVIT, Geometry
from mmbench.world.renderer import Pool
from mmbench.world.sidecar import MMItem
from mmbench.world.tokens import TEXT_VOCAB, UNK, vocabulary
from mmbench.world.wire import IMAGE_PAD_TOKEN


def build_tokenizer(preset: str = DEFAULT_MODEL) -> PreTrainedTokenizerFast:
    special, words = vocabulary(preset)  # Qwen's special tokens, or Kimi K2.5's
    vocab = {f"t{i}": i for i in range(TEXT_VOCAB)}
    vocab.update(special)
    vocab.update(words)
    model = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    model.pre_tokenizer = pre_tokenizers.Whitespace()  # type: ignore[assignment]
    return PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token=UNK, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(special),
    )  # fmt: skip


def load_tokenizer(directory: str, model: str = DEFAULT_MODEL) -> Any:
    """A local Hugging Face tokenizer directory; never downloads."""
    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MmbenchError(f"--tokenizer {directory}: cannot load a tokenizer there ({exc})") from None
    name = "<|media_pad|>" if "<|media_pad|>" in vocabulary(model)[0] else "<|image_pad|>"
    pad = tok.convert_tokens_to_ids(name)
    if pad != IMAGE_PAD_TOKEN:
        raise MmbenchError(
            f"--tokenizer {directory}: {name} is id {pad}; the engine expands id {IMAGE_PAD_TOKEN}"
        )
    return tok


def make_tokenizer(directory: str = "", model: str = DEFAULT_MODEL) -> Any:
    return load_tokenizer(directory, model) if directory else build_tokenizer(model)


@dataclass(frozen=True, slots=True)
class Processor:
    """What Qwen3VLRenderer needs of a processor: its `image_processor`."""

    image_processor: Any


def make_processor(geometry: Geometry) -> Processor:
    if geometry.resize == NAVIT:  # Kimi K2.5: its processor is remote code; mmbench's port
        return Processor(KimiImageProcessor(geometry))
    # transformers without torchvision resolves Qwen2VLImageProcessor to this PIL class (with a
    # warning): named directly, the same class is used whether or not torchvision is installed.
    from transformers import Qwen2VLImageProcessorPil

    # each preset's own normalization, as the sim renderer uses it (mmbench.world.geometry)
    mean, std = geometry.image_mean, geometry.image_std
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=geometry.patch_size, temporal_patch_size=geometry.temporal_patch_size,
        merge_size=geometry.merge_size, min_pixels=geometry.min_pixels, max_pixels=geometry.max_pixels,
        image_mean=list(mean), image_std=list(std),
    )  # fmt: skip
    return Processor(image_processor)


def make_renderer(
    tokenizer: Any, processor: Processor, image_cache_max: int, model: str = DEFAULT_MODEL
) -> Qwen3VLRenderer:
    """The library's renderer of this preset (mmbench.backends.renderers.models); every one of them
    has Qwen3VLRenderer's interface (render, bridge_to_next_turn, parse_response, _image_cache)."""
    cls, config = renderer_class(model)
    renderer: Qwen3VLRenderer = cls(tokenizer, config(image_cache_max=image_cache_max), processor=processor)
    return renderer


def image_cache(renderer: Qwen3VLRenderer) -> dict[str, tuple[Any, int]]:
    """The renderer's per-instance image cache (hash -> (processor output, tokens)). A private
    attribute of renderers 0.1.12, read only: to count hits and misses and to account the pixels
    it holds (tests pin it, so a library version that renames it fails loudly)."""
    cache: dict[str, tuple[Any, int]] = renderer._image_cache
    return cache


class LibraryPool(Pool[Qwen3VLRenderer]):
    """pool_size library renderers, each with its own image cache, one checked out per render."""

    def __init__(
        self, geometry: Geometry, pool_size: int, image_cache_max: int, tokenizer_dir: str = ""
    ) -> None:
        self.geometry = geometry
        self.tokenizer = make_tokenizer(tokenizer_dir, geometry.name)
        self.processor = make_processor(geometry)
        super().__init__(
            [
                make_renderer(self.tokenizer, self.processor, image_cache_max, geometry.name)
                for _ in range(pool_size)
            ]
        )

    @staticmethod
    def count(before: set[str], hashes: list[str]) -> tuple[int, int]:
        """Hits and misses of one render that processed these images: a hash its renderer's cache
        held before, or one seen earlier in the same render, is a hit (the library counts nothing)."""
        seen = set(before)
        hits = 0
        for h in hashes:
            hits += h in seen
            seen.add(h)
        return hits, len(hashes) - hits

    def cached_items(self) -> Iterator[MMItem]:
        """The caches' pixels as items, for the ledger (which counts each buffer once)."""
        for renderer in self.members:
            for out, _ in image_cache(renderer).values():
                yield MMItem(np.asarray(out[self.geometry.grid_key]), 0, out["pixel_values"])
