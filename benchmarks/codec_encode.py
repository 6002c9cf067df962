"""Bytes per item and body build time of each codec, on real renders of photo sources.

    .venv/bin/python benchmarks/codec_encode.py [--sizes 512,1024] [--items 4] [--repeats 5]

For each image size: one item's bytes in the JSON body (its quoted base64 text) as each codec
builds it, beside the hand calculation of vLLM's msgpack layout (mmbench.world.vllm_item: every
byte of the map around the pixels, then base64); and the median time of build_body (torch.cat,
per-item serialization and base64, the JSON body) for a request of `--items` full items, as the
client builds the last turn's request of a rollout with that many images. Not a test: figures to
quote, measured where the machine is quiet (the client's peak comes from `mmbench run`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mmbench.world import vllm_item
from mmbench.world.client import build_body
from mmbench.world.codec import CODECS, b64_len, get_codec, item_wire_bytes
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.renderer import Renderer
from mmbench.world.sidecar import MultiModalData, Placeholder


def sidecar(size: int, items: int) -> MultiModalData:
    renderer = Renderer(get_geometry("qwen3-vl"), image_cache_max=0)
    rendered = [renderer.process(make_source(SourceSpec(size, size), 0, t, 0)) for t in range(items)]
    tokens = rendered[0].item.pixel_values.shape[0] // 4
    placeholders = [Placeholder(40 + i * (tokens + 40), tokens) for i in range(items)]
    return MultiModalData([r.mm_hash for r in rendered], placeholders, [r.item for r in rendered])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        one = sidecar(size, 1)
        shape = one.items[0].pixel_values.shape
        tokens = list(range(one.placeholders[0].offset + one.placeholders[0].length + 8))
        hand = vllm_item.item_bytes(shape, 4, "float32", 1)
        print(f"{size}x{size}: pixel_values {shape} float32, {shape[0] * shape[1] * 4:,} bytes")
        around = hand - shape[0] * shape[1] * 4
        print(f"  vllm by hand: msgpack {hand:,} bytes (pixels + {around} around them), "
              f"in the body {b64_len(hand) + 2:,} bytes")  # fmt: skip
        for name in CODECS:
            body = json.loads(build_body(get_codec(name), "qwen3-vl", tokens, one, [True], 16))
            text = body["features"]["kwargs_data"]["image"][0]
            measured = len(text) + 2
            model = item_wire_bytes(shape, 4, "float32", name, 1)
            print(f"  {name:>6}: one item in the body {measured:,} bytes (model {model:,}; "
                  f"measured / model - 1 = {measured / model - 1:+.6%})")  # fmt: skip
        many = sidecar(size, args.items)
        tokens = list(range(many.placeholders[-1].offset + many.placeholders[-1].length + 8))
        for name in CODECS:
            codec = get_codec(name)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                body_bytes = build_body(codec, "qwen3-vl", tokens, many, [True] * args.items, 16)
                times.append(time.perf_counter() - t0)
                del body_bytes
            median = statistics.median(times)
            print(f"  {name:>6}: build_body with {args.items} full items: median {median:.3f} s "
                  f"(min {min(times):.3f}, max {max(times):.3f}, {args.repeats} runs)")  # fmt: skip


if __name__ == "__main__":
    main()
