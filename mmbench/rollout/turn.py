"""One turn in flight: the run it belongs to (HTTP client, engine URL, build gate) and its own state
(rollout, turn, conversation, previous step, counters, bytes sent so far), held in one object that
the driver's steps and the backend take whole."""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from dataclasses import dataclass
from typing import Any

import httpx

from mmbench.rollout.state import Conversation, RolloutCounters, Step
from mmbench.transports.base import Ship
from mmbench.world.sidecar import MultiModalData


@dataclass(frozen=True, slots=True)
class Session:
    """What every turn of one run shares."""

    http: httpx.AsyncClient
    url: str
    # max_inflight_builds (None: no cap); made per run, since a semaphore binds to its event loop
    gate: asyncio.Semaphore | None = None

    def build_gate(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The cap on concurrent payload builds."""
        return self.gate if self.gate is not None else contextlib.nullcontext()


@dataclass(slots=True)
class Turn:
    session: Session
    rollout: int
    index: int  # 0-based; `number` is the 1-based turn messages name
    conv: Conversation
    prev: Step | None
    counters: RolloutCounters
    sent_bytes: int = 0  # body bytes of every attempt so far (after the first: the cost of faults)

    @property
    def number(self) -> int:
        return self.index + 1

    def count_attempt(self, nbytes: int, plan: list[Ship]) -> None:
        """One attempt's request, body bytes and items in the counters (every attempt counts, also
        one refused at connect)."""
        c = self.counters
        c.requests += 1
        c.bytes_shipped += nbytes
        if self.sent_bytes:
            c.extra_bytes += nbytes
        self.sent_bytes += nbytes
        c.full_items_sent += plan.count(Ship.PIXELS)
        c.null_items_sent += plan.count(Ship.NULL)
        c.media_items_sent += plan.count(Ship.MEDIA)

    def count_render(self, cache_hit: bool) -> None:
        self.counters.cache_hits += cache_hit
        self.counters.cache_misses += not cache_hit


@dataclass(frozen=True, slots=True)
class Rendered:
    """A processed turn's prompt as its backend rendered it."""

    sidecar: MultiModalData  # mmbench's view (arrays shared): what the transport plans, the body ships
    tokens: array | list[int]  # the expanded prompt the body carries
    native: Any = None  # the backend's own output (the library's RenderedTokens), for its step

    def prompt(self) -> list[int]:
        """The prompt as the body takes it (made in the build's thread, not kept)."""
        return self.tokens.tolist() if isinstance(self.tokens, array) else self.tokens


def completion_of(body: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The completion's token ids and logprobs: mmbench's engine also answers them at the top level,
    a vLLM only in `choices` (read as the renderers library's client reads them)."""
    if "token_ids" in body:
        return [int(x) for x in body.get("token_ids") or []], [float(x) for x in body.get("logprobs") or []]
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    entries = [e for e in content or [] if isinstance(e, dict)]
    return [int(x) for x in choice.get("token_ids") or []], [float(e.get("logprob") or 0.0) for e in entries]
