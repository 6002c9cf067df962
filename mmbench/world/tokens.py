"""The token vocabulary mmbench's prompts are written in: Qwen's special tokens at Qwen's ids, and
a word `t<id>` for every id below them (the sim's text token ids, and the engine's completion ids).

One definition for every tokenizer mmbench builds: the renderers backend's (mmbench.backends.renderers)
and the tiny model's that a real vLLM serves (mmbench.world.engine.vllm.model), so a prompt means the
same to each of them.
"""

from __future__ import annotations

from mmbench.world.wire import IMAGE_PAD_TOKEN

SPECIAL_TOKENS = {
    "<|endoftext|>": 151_643, "<|im_start|>": 151_644, "<|im_end|>": 151_645, "<|vision_start|>": 151_652,
    "<|vision_end|>": 151_653, "<|image_pad|>": IMAGE_PAD_TOKEN, "<|video_pad|>": 151_656,
    "<tool_call>": 151_657, "</tool_call>": 151_658, "<tool_response>": 151_665,
    "</tool_response>": 151_666, "<think>": 151_667, "</think>": 151_668,
}  # fmt: skip
# Words for every id below the special tokens: a text of N words `t<id>` encodes to exactly those N ids.
TEXT_VOCAB = 151_643
# The words the chat template itself writes (role names); newlines are whitespace to this tokenizer.
TEMPLATE_WORDS = {"user": 151_670, "assistant": 151_671, "system": 151_672, "<unk>": 151_673}
UNK = "<unk>"


def text_of(token_ids: list[int]) -> str:
    """The words the built tokenizer encodes to exactly these ids."""
    return " ".join(f"t{i}" for i in token_ids)


# Kimi K2.5's special tokens (its tokenizer is Kimi K2's): the renderers library's KimiK25Renderer
# looks these up by name. mmbench's vocabulary puts them above Qwen's, and `<|media_pad|>` at the id
# every mmbench engine expands (Qwen's `<|image_pad|>` id), so one engine serves every preset. The
# real ids are 163,5xx-163,6xx: six digits as these, so a JSON body's bytes are the same.
KIMI_SPECIAL_TOKENS = {
    "<|endoftext|>": 151_643, "<|im_end|>": 151_645, "<|media_pad|>": IMAGE_PAD_TOKEN,
    "<think>": 151_667, "</think>": 151_668,
    "<|im_user|>": 151_680, "<|im_assistant|>": 151_681, "<|im_system|>": 151_682, "<|im_middle|>": 151_683,
    "<|media_begin|>": 151_684, "<|media_content|>": 151_685, "<|media_end|>": 151_686,
    "<|tool_calls_section_begin|>": 151_687, "<|tool_calls_section_end|>": 151_688,
    "<|tool_call_begin|>": 151_689, "<|tool_call_argument_begin|>": 151_690, "<|tool_call_end|>": 151_691,
}  # fmt: skip
# Kimi's template also writes the word "image" inside each image's wrap.
KIMI_TEMPLATE_WORDS = {**TEMPLATE_WORDS, "image": 151_674}


_VOCABULARIES = {"kimi-k2.5": (KIMI_SPECIAL_TOKENS, KIMI_TEMPLATE_WORDS)}


def vocabulary(model: str) -> tuple[dict[str, int], dict[str, int]]:
    """(special tokens, template words) of the tokenizer mmbench builds for this preset (Qwen's
    for every Qwen-VL preset: Qwen3.5/3.6's renderers look up the same names)."""
    return _VOCABULARIES.get(model, (SPECIAL_TOKENS, TEMPLATE_WORDS))
