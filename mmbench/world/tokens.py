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
