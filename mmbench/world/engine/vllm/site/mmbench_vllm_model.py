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
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB_SIZE = 151_936  # Qwen's embedding rows: every special token's id fits
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def tokenizer(spec: dict) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(spec["text_vocab"])}
    vocab.update(spec["special_tokens"])
    vocab.update(spec["template_words"])
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


FAMILIES = {"qwen3-vl": qwen3_vl, "qwen2-vl": qwen2_vl}


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
