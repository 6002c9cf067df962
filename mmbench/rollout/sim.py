"""mmbench's own renderer as the driver's backend: the simulated pool with its FIFO caches renders
each image, the token stream grows by each image's placeholder tokens, and a raw-media body is built
by mmbench's codec."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mmbench.rollout.backend import ClientParts
from mmbench.rollout.state import NO_SIDECAR, Conversation, Step
from mmbench.rollout.turn import Rendered, Turn, completion_of
from mmbench.world.client import EngineReply, build_raw_body, post_generate
from mmbench.world.renderer import RendererPool
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from mmbench.world.wire import IMAGE_PAD_TOKEN


class SimBackend:
    def __init__(self, parts: ClientParts) -> None:
        self.parts = parts
        cfg = parts.config
        self.pool = RendererPool(parts.facts.geometry, cfg.pool_size, cfg.image_cache_max, cfg.dtype)

    def conversation(self) -> Conversation:
        return Conversation()

    def warm_up(self) -> None:
        """Nothing: the worker warms the sim's shared code paths itself."""

    def cached_items(self) -> Iterator[MMItem]:
        return self.pool.cached_items()

    def event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {}

    # --- processed modes -----------------------------------------------------------------

    async def render(self, turn: Turn, text: list[int]) -> Rendered:
        conv, cfg = turn.conv, self.parts.config
        conv.tokens.extend(text)
        stored = turn.prev.sidecar if turn.prev is not None else MultiModalData()
        new_h: list[str] = []
        new_p: list[Placeholder] = []
        new_i: list[MMItem] = []
        n = self.parts.facts.layout.placeholder_tokens  # Kimi: one, the engine expands it
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.parts.sources.get, turn.rollout, turn.index, i)
            conv.sources.append(source)
            rendered = await self.pool.render(source)
            turn.count_render(rendered.cache_hit)
            new_h.append(rendered.mm_hash)
            new_p.append(Placeholder(len(conv.tokens), n))
            new_i.append(rendered.item)
            conv.tokens.extend([IMAGE_PAD_TOKEN] * n)
        return Rendered(stored.extended(new_h, new_p, new_i), conv.tokens)

    async def rederive(self, turn: Turn, source: bytes, item: MMItem) -> MMItem:
        rendered = await self.pool.render(source)
        turn.count_render(rendered.cache_hit)
        return rendered.item

    def step(
        self, turn: Turn, rendered: Rendered, stored: MultiModalData, completion: list[int],
        logprobs: list[float],
    ) -> Step:  # fmt: skip
        step = Step(len(rendered.tokens), completion, logprobs, stored)
        turn.conv.tokens.extend(completion)
        return step

    # --- raw modes -----------------------------------------------------------------------

    async def raw_request(self, turn: Turn, text: list[int], media: list[str]) -> _RawBody:
        conv, cfg = turn.conv, self.parts.config
        conv.rendered.extend(text)
        conv.rendered.extend([IMAGE_PAD_TOKEN] * len(media))  # the engine expands each
        async with turn.session.build_gate():
            body = await asyncio.to_thread(
                build_raw_body, self.parts.codec, cfg.model, conv.rendered.tolist(), conv.media,
                cfg.completion_tokens,
            )  # fmt: skip
        return _RawBody(self, turn, body)


@dataclass(slots=True)
class _RawBody:
    """A raw-media request built once by mmbench's codec, posted as it is on every attempt."""

    backend: SimBackend
    turn: Turn
    body: bytes

    async def send(self) -> EngineReply:
        session = self.turn.session
        return await post_generate(session.http, session.url, self.body, self.backend.parts.codec)

    def size(self) -> int:
        return len(self.body)

    def step(self, reply: EngineReply, prompt: list[int], placeholders: list[Placeholder]) -> Step:
        self.body = b""  # answered: the body is not kept
        conv = self.turn.conv
        # The expanded stream is the engine's prompt; the client renders from its own next turn.
        del conv.tokens[:]
        conv.tokens.extend(prompt)
        completion, logprobs = completion_of(reply.body)
        conv.rendered.extend(completion)
        conv.tokens.extend(completion)
        return Step(len(prompt), completion, logprobs, NO_SIDECAR, placeholders)
