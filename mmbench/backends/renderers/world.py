"""The library-backed world: every turn rendered by the `renderers` library's own objects.

It is mmbench's rollout driver (mmbench.rollout.World: sources, transports, the codec and wire, the
retry/latency/counter logic, the raw-media check) with the renderer replaced by the library:
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
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
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
from mmbench.config import PointConfig
from mmbench.rollout import raw
from mmbench.rollout.driver import HTTP_TIMEOUT_S, NO_SIDECAR, World, completion_of
from mmbench.rollout.state import Conversation, RolloutCounters, RolloutFailed, Step
from mmbench.transports.base import Ship, Transport
from mmbench.world.client import EngineReply
from mmbench.world.codec import pixel_checksum
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


class LibraryWorld(World):
    def __init__(
        self, config: PointConfig, transport: Transport, source_cache: Path | None = None,
        asset_dir: Path | None = None,
    ) -> None:  # fmt: skip
        super().__init__(config, transport, source_cache, asset_dir)
        self.library = LibraryPool(self.geometry, config.pool_size, config.image_cache_max, config.tokenizer)
        # crc32 of each image's pixels as the library first produced them: the client's side of the
        # correctness check (the library's descriptors keep no checksum). mmbench's, not the client's.
        self._checksums: dict[str, int] = {}
        self._clients: dict[int, openai.AsyncOpenAI] = {}

    def cached_items(self) -> Iterator[MMItem]:
        return self.library.cached_items()

    def warm_up(self) -> None:
        """The library's lazy state (processor, tokenizer paths, the openai SDK's imports) exercised
        on a tiny image by a throwaway renderer, so that the pool's caches start empty."""
        spec = SourceSpec(64, 64, self.config.image_format, "flat")
        renderer = make_renderer(self.library.tokenizer, self.library.processor, 1, self.geometry.name)
        message = {"role": "user", "content": [{"type": "image", "image": make_source(spec, 0, 0, 0)}]}
        rendered = renderer.render([message], add_generation_prompt=True)
        renderer.render([message], add_generation_prompt=True, process_multimodal=False)
        renderer.parse_response(rendered.token_ids[:4])
        openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key=OPENAI_API_KEY, max_retries=0)

    def _conversation(self) -> Conversation:
        return Chat()

    def _http_client(self) -> httpx.AsyncClient:
        client = super()._http_client()
        client.event_hooks = {"request": [_on_request], "response": [_on_response]}
        return client

    async def _turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Conversation, prev: Step | None,
        c: RolloutCounters, turn_bytes: list[int],
    ) -> Step:  # fmt: skip
        assert isinstance(conv, Chat) and (prev is None or isinstance(prev, LibraryStep))
        if self.transport.renders:
            return await self._rendered_turn(http, url, r, t, conv, prev, c, turn_bytes)
        return await self._generate_turn(http, url, r, t, conv, c, turn_bytes)

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

    async def _rendered_turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Chat, prev: LibraryStep | None,
        c: RolloutCounters, turn_bytes: list[int],
    ) -> LibraryStep:  # fmt: skip
        cfg = self.config
        parts: list[dict[str, Any]] = [{"type": "text", "text": text_of(self.text_tokens(r, t))}]
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.sources.get, r, t, i)
            conv.sources.append(source)
            parts.append({"type": "image", "image": source})
        message: dict[str, Any] = {"role": "user", "content": parts}
        conv.messages.append(message)
        async with self.library.checkout() as renderer:
            rendered = await asyncio.to_thread(self._render, renderer, conv, prev, message, c)
        conv.prompt_ids = rendered.token_ids
        mm = rendered.multi_modal_data or LibraryMM()
        try:
            sent, reply, plan = await self._exchange(http, url, conv, self._view(mm), c, turn_bytes, t + 1)
        finally:
            conv.prompt_ids = []
        completion, logprobs = completion_of(reply.body)  # top level, or a vLLM's `choices`
        # the assistant's answer joins the chat as the library parses it
        answer = self.library.members[0].parse_response(completion, prompt_ids=rendered.token_ids)
        conv.messages.append({"role": "assistant", "content": answer.content})
        stored = _stored(mm, self.transport.stored(sent, plan), self.geometry.grid_key)
        prompt = replace(rendered, multi_modal_data=stored)
        return LibraryStep(len(rendered.token_ids), completion, logprobs, NO_SIDECAR, None, prompt)

    def _view(self, mm: LibraryMM) -> MultiModalData:
        """mmbench's view of the library's sidecar (arrays shared), for the transports and the body."""
        hashes = list(mm.mm_hashes.get(MODALITY, []))
        items = [
            MMItem(item[self.geometry.grid_key], self._checksums[h], item.get("pixel_values"))
            for h, item in zip(hashes, mm.mm_items.get(MODALITY, []), strict=True)
        ]
        placeholders = [Placeholder(p.offset, p.length) for p in mm.mm_placeholders.get(MODALITY, [])]
        return MultiModalData(hashes, placeholders, items)

    def _prompt_tokens(self, conv: Conversation) -> list[int]:
        assert isinstance(conv, Chat)
        return conv.prompt_ids

    async def _with_pixels(
        self, conv: Conversation, sidecar: MultiModalData, plan: list[Ship], c: RolloutCounters
    ) -> MultiModalData:
        """Re-derive the pixels of every item shipped in full that has none: the library's renderer
        renders a one-image message (its cache consulted as on any render)."""
        items = list(sidecar.items)
        for i, (item, ship) in enumerate(zip(items, plan, strict=True)):
            if ship is Ship.PIXELS and not item.has_pixels:
                message: dict[str, Any] = {
                    "role": "user",
                    "content": [{"type": "image", "image": conv.sources[i]}],
                }
                alone = Chat(messages=[message])
                async with self.library.checkout() as renderer:
                    rendered = await asyncio.to_thread(self._render, renderer, alone, None, message, c)
                assert rendered.multi_modal_data is not None
                c.rederived += 1
                items[i] = replace(
                    item, pixel_values=rendered.multi_modal_data.mm_items[MODALITY][0]["pixel_values"]
                )
        return sidecar.with_items(items)

    # --- raw modes -----------------------------------------------------------------------

    def _client(self, http: httpx.AsyncClient, url: str) -> openai.AsyncOpenAI:
        """The openai SDK client the library posts through, over this world's HTTP client (whose
        hooks see each body and answer); the SDK's own retries are off: mmbench's loop retries."""
        if id(http) not in self._clients:
            self._clients[id(http)] = openai.AsyncOpenAI(
                # the SDK (httpx2 inside) takes a legacy httpx client as it is: its hooks stay ours
                base_url=url + "/v1", api_key=OPENAI_API_KEY, http_client=http,  # type: ignore[arg-type]
                max_retries=0,
                timeout=HTTP_TIMEOUT_S,
            )  # fmt: skip
        return self._clients[id(http)]

    async def _generate_turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Chat, c: RolloutCounters,
        turn_bytes: list[int],
    ) -> LibraryStep:  # fmt: skip
        cfg = self.config
        parts: list[dict[str, Any]] = [{"type": "text", "text": text_of(self.text_tokens(r, t))}]
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.sources.get, r, t, i)
            media = await asyncio.to_thread(
                raw.media_url, self.transport.media, source, cfg.image_format, self.assets
            )
            conv.media.append(media)
            parts.append({"type": "image_url", "image_url": {"url": media}})
            del source
        conv.messages.append({"role": "user", "content": parts})
        plan = self.transport.plan(url, cfg.model, conv.media)
        client = self._client(http, url)
        # generate renders synchronously before its first await, so no other rollout can use the
        # renderer meanwhile: the raw path needs no checkout (and renders no image)
        renderer = self.library.members[0]
        capture = _Capture()
        result: dict[str, Any] = {}

        async def send() -> EngineReply:
            nonlocal capture
            capture = _Capture()
            token = _CAPTURE.set(capture)
            try:
                out = await generate(
                    client=client, renderer=renderer, messages=conv.messages, model=cfg.model,
                    sampling_params={"max_tokens": cfg.completion_tokens, "temperature": 1.0},
                    process_multimodal=False,
                )  # fmt: skip
            except openai.APIStatusError as exc:
                return EngineReply(exc.status_code, _parsed(capture.answer) or {"error": str(exc)})
            except openai.APIConnectionError as exc:  # refused, reset, timed out: retried
                raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from None
            except MalformedGenerateResponseError as exc:
                raise RolloutFailed(f"turn {t + 1}: the library refused the engine's answer: {exc}") from None
            finally:
                _CAPTURE.reset(token)
            result.update(out)
            return EngineReply(200, _parsed(capture.answer))

        reply = await self._attempts(send, lambda: capture.sent, plan, c, turn_bytes, t + 1)
        if not reply.ok:
            raise RolloutFailed(f"turn {t + 1}: engine answered {reply.status}: {reply.error}")
        _, _, checksums = raw.read_answer(reply.body, len(conv.media), t + 1)
        raw.keep_checksums(c, reply.body, checksums)
        conv.messages.append({"role": "assistant", "content": result["content"]})
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
