"""The library as the driver's backend: every turn rendered by the `renderers` library's own objects.

The rollout driver (mmbench.rollout.RolloutDriver: sources, transports, the codec and wire, the
retry/latency/counter logic, the raw-media check) calls this backend where the sim renders:
- processed modes (full, ephemeral, hash-only, ephemeral+hash-only): the first turn is rendered with
  `Qwen3VLRenderer.render`, every later one with `bridge_to_next_turn` (a full `render` where the
  bridge declines), as the library's multi-turn clients do, through a pool of the library's
  renderers. The library's `MultiModalData` ships through mmbench's body builder (the library's own
  features encoder needs vLLM), and the step keeps the library's `RenderedTokens`, its sidecar as
  the mode stores it: as returned (full), or with the pull request's semantics (docs/domain.md
  section 6) applied to the library's sidecar by mmbench's transports (descriptors keep the hash,
  placeholder and grid; pixels re-derived through the library's renderer when shipped).
- raw modes: `renderers.client.generate(..., process_multimodal=False)` over an `openai.AsyncOpenAI`
  client pointed at the engine; the step keeps the dict it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import openai
import orjson
from renderers.base import MultiModalData as LibraryMM
from renderers.base import RenderedTokens
from renderers.client import MalformedGenerateResponseError, generate
from renderers.qwen3_vl import Qwen3VLRenderer

from mmbench.backends.renderers.parts import LibraryPool, image_cache, make_renderer
from mmbench.backends.renderers.state import Chat, LibraryStep
from mmbench.rollout.backend import ClientParts
from mmbench.rollout.driver import HTTP_TIMEOUT_S
from mmbench.rollout.state import NO_SIDECAR, Conversation, RolloutCounters, RolloutFailed, Step
from mmbench.rollout.turn import Rendered, Turn
from mmbench.world.client import EngineReply
from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import Geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from mmbench.world.tokens import text_of
from mmbench.world.wire import MODALITY

OPENAI_API_KEY = "mmbench"  # the embedded engine checks none; the SDK wants one


@dataclass(slots=True)
class _Capture:
    """One request as the HTTP client saw it: the body bytes sent and the answer read."""

    sent: int = 0
    answer: bytes = b""


_CAPTURE: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar("mmbench_capture", default=None)


async def _on_request(request: httpx.Request) -> None:
    capture = _CAPTURE.get()
    if capture is not None:
        capture.sent = len(request.content)


async def _on_response(response: httpx.Response) -> None:
    capture = _CAPTURE.get()
    if capture is not None:
        capture.answer = await response.aread()


class LibraryBackend:
    def __init__(self, parts: ClientParts) -> None:
        self.parts = parts
        cfg = parts.config
        self.library = LibraryPool(parts.facts.geometry, cfg.pool_size, cfg.image_cache_max, cfg.tokenizer)
        # crc32 of each image's pixels as the library first produced them: the client's side of the
        # correctness check (the library's descriptors keep no checksum). mmbench's, not the client's.
        self._checksums: dict[str, int] = {}
        self._clients: dict[int, openai.AsyncOpenAI] = {}

    @property
    def geometry(self) -> Geometry:
        return self.parts.facts.geometry

    def conversation(self) -> Conversation:
        return Chat()

    def cached_items(self) -> Iterator[MMItem]:
        return self.library.cached_items()

    def warm_up(self) -> None:
        """The library's lazy state (processor, tokenizer paths, the openai SDK's imports) exercised
        on a tiny image by a throwaway renderer, so that the pool's caches start empty."""
        spec = SourceSpec(64, 64, self.parts.config.image_format, "flat")
        renderer = make_renderer(self.library.tokenizer, self.library.processor, 1, self.geometry.name)
        message = {"role": "user", "content": [{"type": "image", "image": make_source(spec, 0, 0, 0)}]}
        rendered = renderer.render([message], add_generation_prompt=True)
        renderer.render([message], add_generation_prompt=True, process_multimodal=False)
        renderer.parse_response(rendered.token_ids[:4])
        openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key=OPENAI_API_KEY, max_retries=0)

    def event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """The hooks that see each body the library's client sends and each answer it reads."""
        return {"request": [_on_request], "response": [_on_response]}

    # --- processed modes -----------------------------------------------------------------

    def _render(
        self, renderer: Qwen3VLRenderer, conv: Chat, prev: LibraryStep | None, new: dict[str, Any],
        c: RolloutCounters,
    ) -> RenderedTokens:  # fmt: skip
        """This turn's prompt as the library's multi-turn clients get it (runs in a thread)."""
        before = set(image_cache(renderer))
        rendered = None
        if prev is not None and prev.prompt is not None:
            rendered = renderer.bridge_to_next_turn(
                prev.prompt.token_ids, prev.completion_ids, [new],
                previous_multi_modal_data=prev.prompt.multi_modal_data,
            )  # fmt: skip
        bridged = rendered is not None
        if rendered is None:
            rendered = renderer.render(conv.messages, add_generation_prompt=True)
        mm = rendered.multi_modal_data or LibraryMM()
        hashes = mm.mm_hashes.get(MODALITY, [])
        # the images this call processed (the bridge processes the new message's only)
        processed = hashes[len(hashes) - _images(new) :] if bridged else hashes
        hits, misses = self.library.count(before, processed)
        c.cache_hits += hits
        c.cache_misses += misses
        for h, item in zip(hashes, mm.mm_items.get(MODALITY, []), strict=True):
            pv = item.get("pixel_values")
            if h not in self._checksums and pv is not None:
                self._checksums[h] = pixel_checksum(pv)
        return rendered

    async def render(self, turn: Turn, text: list[int]) -> Rendered:
        conv, prev = turn.conv, turn.prev
        assert isinstance(conv, Chat) and (prev is None or isinstance(prev, LibraryStep))
        parts: list[dict[str, Any]] = [{"type": "text", "text": text_of(text)}]
        for i in range(self.parts.config.images_per_turn):
            source = await asyncio.to_thread(self.parts.sources.get, turn.rollout, turn.index, i)
            conv.sources.append(source)
            parts.append({"type": "image", "image": source})
        message: dict[str, Any] = {"role": "user", "content": parts}
        conv.messages.append(message)
        async with self.library.checkout() as renderer:
            rendered = await asyncio.to_thread(self._render, renderer, conv, prev, message, turn.counters)
        return Rendered(self._view(rendered.multi_modal_data or LibraryMM()), rendered.token_ids, rendered)

    def step(
        self, turn: Turn, rendered: Rendered, stored: MultiModalData, completion: list[int],
        logprobs: list[float],
    ) -> Step:  # fmt: skip
        conv, native = turn.conv, rendered.native
        assert isinstance(conv, Chat) and isinstance(native, RenderedTokens)
        # the assistant's answer joins the chat as the library parses it
        answer = self.library.members[0].parse_response(completion, prompt_ids=native.token_ids)
        conv.messages.append({"role": "assistant", "content": answer.content})
        mm = native.multi_modal_data or LibraryMM()
        prompt = replace(native, multi_modal_data=_stored(mm, stored, self.geometry.grid_key))
        return LibraryStep(len(native.token_ids), completion, logprobs, NO_SIDECAR, None, prompt)

    def _view(self, mm: LibraryMM) -> MultiModalData:
        """mmbench's view of the library's sidecar (arrays shared), for the transports and the body."""
        hashes = list(mm.mm_hashes.get(MODALITY, []))
        items = [
            MMItem(item[self.geometry.grid_key], self._checksums[h], item.get("pixel_values"))
            for h, item in zip(hashes, mm.mm_items.get(MODALITY, []), strict=True)
        ]
        placeholders = [Placeholder(p.offset, p.length) for p in mm.mm_placeholders.get(MODALITY, [])]
        return MultiModalData(hashes, placeholders, items)

    async def rederive(self, turn: Turn, source: bytes, item: MMItem) -> MMItem:
        """The library's renderer renders a one-image message (its cache consulted as on any render)."""
        message: dict[str, Any] = {"role": "user", "content": [{"type": "image", "image": source}]}
        alone = Chat(messages=[message])
        async with self.library.checkout() as renderer:
            rendered = await asyncio.to_thread(self._render, renderer, alone, None, message, turn.counters)
        assert rendered.multi_modal_data is not None
        return replace(item, pixel_values=rendered.multi_modal_data.mm_items[MODALITY][0]["pixel_values"])

    # --- raw modes -----------------------------------------------------------------------

    def _client(self, http: httpx.AsyncClient, url: str) -> openai.AsyncOpenAI:
        """The openai SDK client the library posts through, over the driver's HTTP client (whose
        hooks see each body and answer); the SDK's own retries are off: mmbench's loop retries."""
        if id(http) not in self._clients:
            self._clients[id(http)] = openai.AsyncOpenAI(
                # the SDK (httpx2 inside) takes a legacy httpx client as it is: its hooks stay ours
                base_url=url + "/v1", api_key=OPENAI_API_KEY, http_client=http,  # type: ignore[arg-type]
                max_retries=0,
                timeout=HTTP_TIMEOUT_S,
            )  # fmt: skip
        return self._clients[id(http)]

    async def raw_request(self, turn: Turn, text: list[int], media: list[str]) -> _Generate:
        conv = turn.conv
        assert isinstance(conv, Chat)
        parts: list[dict[str, Any]] = [{"type": "text", "text": text_of(text)}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in media]
        conv.messages.append({"role": "user", "content": parts})
        # generate renders synchronously before its first await, so no other rollout can use the
        # renderer meanwhile: the raw path needs no checkout (and renders no image)
        return _Generate(self, turn, conv, self._client(turn.session.http, turn.session.url))


@dataclass(slots=True)
class _Generate:
    """One raw-media request as the library's client makes it: each attempt a `generate` call, its
    body and answer seen by the driver's HTTP hooks."""

    backend: LibraryBackend
    turn: Turn
    conv: Chat
    client: openai.AsyncOpenAI
    capture: _Capture = field(default_factory=_Capture)
    result: dict[str, Any] = field(default_factory=dict)

    async def send(self) -> EngineReply:
        self.capture = capture = _Capture()
        token = _CAPTURE.set(capture)
        cfg = self.backend.parts.config
        try:
            out = await generate(
                client=self.client, renderer=self.backend.library.members[0], messages=self.conv.messages,
                model=cfg.model, sampling_params={"max_tokens": cfg.completion_tokens, "temperature": 1.0},
                process_multimodal=False,
            )  # fmt: skip
        except openai.APIStatusError as exc:
            return EngineReply(exc.status_code, _parsed(capture.answer) or {"error": str(exc)})
        except openai.APIConnectionError as exc:  # refused, reset, timed out: retried
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from None
        except MalformedGenerateResponseError as exc:
            raise RolloutFailed(
                f"turn {self.turn.number}: the library refused the engine's answer: {exc}"
            ) from None
        finally:
            _CAPTURE.reset(token)
        self.result.update(out)
        return EngineReply(200, _parsed(capture.answer))

    def size(self) -> int:
        return self.capture.sent

    def step(self, reply: EngineReply, prompt: list[int], placeholders: list[Placeholder]) -> Step:
        result = self.result
        self.conv.messages.append({"role": "assistant", "content": result["content"]})
        return LibraryStep(
            len(result["prompt_ids"]), result["completion_ids"], result["completion_logprobs"], NO_SIDECAR,
            None, None, result,
        )  # fmt: skip


def _images(message: dict[str, Any]) -> int:
    content = message.get("content")
    return (
        sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")
        if isinstance(content, list)
        else 0
    )


def _parsed(answer: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(answer) if answer else {}
    except orjson.JSONDecodeError:
        return {"error": "unreadable reply"}
    return body if isinstance(body, dict) else {"error": "reply is not a JSON object"}


def _stored(mm: LibraryMM, stored: MultiModalData, key: str = "image_grid_thw") -> LibraryMM:
    """The library's sidecar as the mode stores it: each item kept as the library returned it where
    the transport keeps it so, else a descriptor dict (its grid, no pixel_values; hashes and
    placeholders stay in their lists), or, for pixels re-derived for a resend that the mode keeps,
    an item dict holding them. Arrays and unchanged item dicts are shared, not copied."""
    items = mm.mm_items.get(MODALITY, [])
    out: list[dict[str, Any]] = []
    for item, want in zip(items, stored.items, strict=True):
        pv = item.get("pixel_values")
        if want.pixel_values is None:
            out.append(item if pv is None else {key: item[key]})
        else:
            same = pv is want.pixel_values
            out.append(item if same else {"pixel_values": want.pixel_values, key: item[key]})
    if all(a is b for a, b in zip(out, items, strict=True)):
        return mm
    return LibraryMM(
        mm_hashes=mm.mm_hashes, mm_placeholders=mm.mm_placeholders, mm_items={**mm.mm_items, MODALITY: out}
    )
