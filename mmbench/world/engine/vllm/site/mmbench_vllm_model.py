"""Write a tiny Qwen-VL model directory for vLLM to serve with dummy weights (`--load-format dummy`).

Run by mmbench with the vLLM environment's interpreter, so the config and processor files come from
the transformers vLLM itself loads: `python mmbench_vllm_model.py OUT_DIR < spec.json`. The spec
(written by mmbench.world.engine.vllm.model) gives the preset's family, its image geometry and
normalization, and the tokenizer's vocabulary: mmbench's text token ids are the words `t<id>` and
Qwen's special tokens sit at Qwen's ids, so the prompts mmbench renders mean the same here.

The model is small (text: hidden 128, 2 layers; vision: depth 2): the weights hold no multimodal
data, and what mmbench measures of the engine (its processor, caches, request handling, batching)
does not depend on them. Standard library, tokenizers and transformers only.
"""

from __future__ import annotations

import json
import os
import string
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB_SIZE = 151_936  # Qwen's embedding rows: every special token's id fits
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def tokenizer(spec: dict) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(spec["text_vocab"])}
    vocab.update(spec["special_tokens"])
    vocab.update(spec["template_words"])
    # vLLM 0.32's structured-decisions API (on for Qwen3.5's architecture) checks at start-up that
    # its answer labels (A-Z, 0-9, yes, no) are one token each. transformers loads this vocabulary for
    # model_type qwen3_5 as Qwen3_5Tokenizer, a BPE without merges, where a word made of characters
    # the vocabulary lacks encodes to nothing, and the check dies on an IndexError, taking the server
    # with it. With the labels and single letters in the vocabulary every label encodes to something:
    # the check passes or disables that API (a ValueError it catches), and the server starts.
    labels = [*string.ascii_uppercase, *string.ascii_lowercase, *string.digits, "yes", "no"]
    vocab.update({w: 151_700 + i for i, w in enumerate(labels) if w not in vocab})
    model = Tokenizer(models.WordLevel(vocab, unk_token=spec["unk"]))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token=spec["unk"], eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(spec["special_tokens"]),
    )  # fmt: skip


def qwen3_vl(spec: dict, g: dict) -> tuple[object, object]:
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor

    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            max_position_embeddings=spec["max_model_len"],
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [6, 5, 5],
                             "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=g["patch_size"],
            spatial_merge_size=g["merge_size"], temporal_patch_size=g["temporal_patch_size"],
            out_hidden_size=128, deepstack_visual_indexes=[0],
        ),
    )  # fmt: skip
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    return config, processor(Qwen3VLProcessor, Qwen2VLImageProcessor, Qwen3VLVideoProcessor, spec, g)


def qwen2_vl(spec: dict, g: dict) -> tuple[object, object]:
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=spec["max_model_len"],
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
        ),
        vision_config=dict(
            depth=2, embed_dim=64, hidden_size=128, num_heads=2, patch_size=g["patch_size"],
            spatial_merge_size=g["merge_size"], temporal_patch_size=g["temporal_patch_size"],
        ),
    )  # fmt: skip
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    return config, processor(Qwen2VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor, spec, g)


def qwen3_5(spec: dict, g: dict) -> tuple[object, object]:
    """Qwen3.5's architecture (Qwen3_5ForConditionalGeneration: linear-attention and full-attention
    layers, Qwen3-VL's vision tower and processor), tiny; Qwen's vision token ids as mmbench's."""
    from transformers import Qwen2VLImageProcessor, Qwen3_5Config, Qwen3VLProcessor, Qwen3VLVideoProcessor

    config = Qwen3_5Config(
        text_config=dict(
            vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
            # the CPU kernel of the linear-attention layers takes head dim 128 only (as the real model)
            linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=128,
            linear_value_head_dim=128, layer_types=["linear_attention", "full_attention"],
            max_position_embeddings=spec["max_model_len"],
            rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                             "mrope_section": [3, 3, 2], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=g["patch_size"],
            spatial_merge_size=g["merge_size"], temporal_patch_size=g["temporal_patch_size"],
            out_hidden_size=128,
        ),
        image_token_id=151_655, video_token_id=151_656, vision_start_token_id=151_652,
        vision_end_token_id=151_653,
    )  # fmt: skip
    config.architectures = ["Qwen3_5ForConditionalGeneration"]
    return config, processor(Qwen3VLProcessor, Qwen2VLImageProcessor, Qwen3VLVideoProcessor, spec, g)


class _KimiProcessor:
    """What a Kimi K2.5 checkpoint ships for images: preprocessor_config.json with its media_proc_cfg
    (vLLM reads it into its own KimiK25FusedVisionProcessor), and the tokenizer's files."""

    def __init__(self, spec: dict, g: dict) -> None:
        self.spec, self.g = spec, g

    def save_pretrained(self, out: str) -> None:
        g = self.g
        media_proc_cfg = {
            "patch_size": g["patch_size"], "merge_kernel_size": g["merge_size"],
            "in_patch_limit": g["max_patches"], "patch_limit_on_one_side": g["max_patches_per_side"],
            "fixed_output_tokens": None, "image_mean": g["image_mean"], "image_std": g["image_std"],
            "in_patch_limit_each_frame": 4096, "in_patch_limit_video": None, "sample_fps": 2.0,
            "max_num_frames_each_video": None, "temporal_merge_kernel_size": 4,
            "timestamp_mode": "hh:mm:ss.fff",
        }  # fmt: skip
        with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
            json.dump({"media_proc_cfg": media_proc_cfg}, f, indent=1, sort_keys=True)
        tok = tokenizer(self.spec)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(out)


def kimi_k25(spec: dict, g: dict) -> tuple[object, object]:
    """Kimi K2.5's architecture (KimiK25ForConditionalGeneration: a DeepSeek-V3 text model with MLA
    and MoE, the MoonViT vision tower), tiny; <|media_pad|> at mmbench's pad id."""
    from transformers import Kimi_K25Config

    config = Kimi_K25Config(
        text_config=dict(
            model_type="deepseek_v3", vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256,
            moe_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
            # MLA's latent head (kv_lora_rank + qk_rope_head_dim) must be 320, 512 or 576 in vLLM (real: 576)
            first_k_dense_replace=1, kv_lora_rank=512, q_lora_rank=64, qk_rope_head_dim=64, v_head_dim=32,
            qk_nope_head_dim=32, max_position_embeddings=spec["max_model_len"],
        ),
        vision_config=dict(
            patch_size=g["patch_size"], num_attention_heads=2, num_hidden_layers=2, hidden_size=64,
            intermediate_size=128, merge_kernel_size=[g["merge_size"], g["merge_size"]],
        ),
        projection_hidden_size=64, image_token_id=151_655, video_token_id=151_656,
    )  # fmt: skip
    config.architectures = ["KimiK25ForConditionalGeneration"]
    # as Kimi K2.5's config.json: vLLM then takes a request's images as its one modality, vision_chunk
    # (without it, raw media is refused: "At most 0 image(s) may be provided in one prompt.")
    config.use_unified_vision_chunk = True
    return config, _KimiProcessor(spec, g)


def processor(processor_cls: type, image_cls: type, video_cls: type, spec: dict, g: dict) -> object:
    """The preset's processor: its image processor's geometry and normalization, a video processor
    of the same patches (the processor class requires one), mmbench's tokenizer."""
    patches = {"patch_size": g["patch_size"], "temporal_patch_size": g["temporal_patch_size"],
               "merge_size": g["merge_size"]}  # fmt: skip
    image = image_cls(
        **patches, size={"shortest_edge": g["min_pixels"], "longest_edge": g["max_pixels"]},
        image_mean=g["image_mean"], image_std=g["image_std"],
    )  # fmt: skip
    return processor_cls(
        image_processor=image,
        tokenizer=tokenizer(spec),
        video_processor=video_cls(**patches),
        chat_template=CHAT_TEMPLATE,
    )


# Qwen3.6 is Qwen3.5's architecture (its released checkpoint the MoE variant) with Qwen3.5's processor
FAMILIES = {
    "qwen3-vl": qwen3_vl, "qwen2-vl": qwen2_vl, "qwen3.5": qwen3_5, "qwen3.6": qwen3_5, "kimi-k2.5": kimi_k25,
}  # fmt: skip


def main() -> None:
    out = sys.argv[1]
    spec = json.load(sys.stdin)
    config, processor = FAMILIES[spec["family"]](spec, spec["geometry"])
    config.save_pretrained(out)
    processor.save_pretrained(out)
    with open(os.path.join(out, "mmbench-model.json"), "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
