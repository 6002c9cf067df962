"""The client side of the wire: build a request body as the real client does, post it, read it.

Full items are built with torch as the real client builds them: `torch.as_tensor` of each item,
`torch.cat` of all full items (so a request transiently holds the pixels again), then each item
serialized and base64-encoded into the JSON body (4/3 x), then the body itself. bfloat16 pixels
(held as their uint16 bits) go through torch as bfloat16 tensors and ship with dtype "bfloat16".
With `--codec vllm` the grids are concatenated too and the batch is split into vLLM's items
(mmbench.world.vllm_item), each serialized and base64-encoded in turn, as renderers' client does.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from mmbench.world import vllm_item
from mmbench.world.codec import Codec, encode_item
from mmbench.world.geometry import grid_key
from mmbench.world.sidecar import MultiModalData
from mmbench.world.wire import GENERATE_PATH, raw_request_object, request_object

if TYPE_CHECKING:
    import torch

# torch is imported where pixels are built, not here: the harness, the CLI and the engine import this
# module and never build a body (`mmbench --help` took 4 s with torch, 1 s without). A worker imports
# it in its warm-up, before its baseline; a fork server preloads it (mmbench.measure.harness).


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context every client of this process shares: httpx otherwise loads the CA
    store for each client it makes (50 ms a point), which an http:// engine never uses."""
    return httpx.create_ssl_context()


def _as_tensor(pv: np.ndarray, dtype: str) -> torch.Tensor:
    """An item's pixels as the torch tensor the client concatenates (bfloat16 from its uint16 bits)."""
    import torch

    if dtype == "bfloat16":
        if pv.dtype != np.uint16:
            raise ValueError(f"bfloat16 pixels must be held as uint16 bits, got {pv.dtype}")
        return torch.as_tensor(pv.view(np.int16)).view(torch.bfloat16)
    if dtype != "float32" or pv.dtype != np.float32:
        raise ValueError(f"pixels of dtype {pv.dtype} cannot ship as {dtype!r}")
    return torch.as_tensor(pv)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """A view of a (contiguous) tensor's bytes as numpy: bfloat16 as uint16 bits."""
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def build_body(
    codec: Codec,
    model: str,
    token_ids: list[int],
    sidecar: MultiModalData,
    full_mask: list[bool],
    max_tokens: int,
    dtype: str = "float32",
) -> bytes:
    """The exact request body bytes for this turn. Items with full_mask True must carry pixels
    (of `dtype`: float32, or bfloat16 held as its uint16 bits)."""
    kwargs: list[str | None] = [None] * len(sidecar)
    full = [i for i, f in enumerate(full_mask) if f]
    if full:
        import torch

        pixel_arrays: list[np.ndarray] = []
        for i in full:
            pv = sidecar.items[i].pixel_values
            if pv is None:
                raise ValueError(f"item {i} is shipped in full but carries no pixel_values")
            pixel_arrays.append(pv)
        batch = torch.cat([_as_tensor(pv, dtype) for pv in pixel_arrays])
        if codec.item_format == "vllm":
            grids = torch.cat([torch.as_tensor(sidecar.items[i].image_grid_thw) for i in full])
            items = vllm_item.encode_items(batch, grids, grid_key(model))
            for i, raw in zip(full, items, strict=True):
                kwargs[i] = codec.b64encode(raw).decode("ascii")
                del raw
        else:
            offset = 0
            for i, pv in zip(full, pixel_arrays, strict=True):
                rows = pv.shape[0]
                part = _as_numpy(batch[offset : offset + rows])
                raw = encode_item(part, dtype, sidecar.items[i].image_grid_thw)
                kwargs[i] = codec.b64encode(raw).decode("ascii")
                del raw
                offset += rows
        del batch, pixel_arrays
    placeholders = [(p.offset, p.length) for p in sidecar.placeholders]
    obj = request_object(model, token_ids, list(sidecar.hashes), placeholders, kwargs, max_tokens)
    return codec.dumps(obj)


def build_raw_body(codec: Codec, model: str, token_ids: list[int], urls: list[str], max_tokens: int) -> bytes:
    """The raw-media body: the rendered tokens (one pad per image) and every image's URL."""
    return codec.dumps(raw_request_object(model, token_ids, urls, max_tokens))


@dataclass(frozen=True, slots=True)
class EngineReply:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def error(self) -> str:
        return str(self.body.get("error", f"HTTP {self.status}"))


async def post_generate(http: httpx.AsyncClient, url: str, body: bytes, codec: Codec) -> EngineReply:
    response = await http.post(
        url + GENERATE_PATH, content=body, headers={"content-type": "application/json"}
    )
    try:
        parsed = codec.loads(response.content)
    except ValueError:
        parsed = {"error": f"HTTP {response.status_code}: unreadable reply"}
    if not isinstance(parsed, dict):
        parsed = {"error": f"HTTP {response.status_code}: reply is not a JSON object"}
    return EngineReply(response.status_code, parsed)
