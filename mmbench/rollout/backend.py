"""Who renders a turn, as a strategy the one rollout driver calls: what differs between mmbench's
simulated renderer (mmbench.rollout.sim) and the real `renderers` library
(mmbench.backends.renderers). The driver does everything else the same way for both: the sources and
media URLs, the transport's plan, the body's build and its trim policy, the retries, the counters
and the correctness checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from mmbench.config import PointConfig
from mmbench.facts import PointFacts
from mmbench.rollout.state import Conversation, Step
from mmbench.rollout.turn import Rendered, Turn
from mmbench.world.client import EngineReply
from mmbench.world.codec import Codec
from mmbench.world.images import SourceStore
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder


@dataclass(frozen=True, slots=True)
class ClientParts:
    """The world's parts of one point's client, made once by the driver and shared with its backend."""

    facts: PointFacts
    codec: Codec
    sources: SourceStore

    @property
    def config(self) -> PointConfig:
        return self.facts.config


class RawRequest(Protocol):
    """One raw-media request, as the backend sends it (the driver retries it as it is)."""

    async def send(self) -> EngineReply:
        """One attempt."""
        ...

    def size(self) -> int:
        """The body bytes the last attempt sent."""
        ...

    def step(self, reply: EngineReply, prompt: list[int], placeholders: list[Placeholder]) -> Step:
        """The step of an answer the driver has checked (its expanded prompt and placeholders)."""
        ...


class Backend(Protocol):
    """Who renders: made by the driver from its ClientParts (`BackendFactory`)."""

    def conversation(self) -> Conversation:
        """A new rollout's conversation, as this backend holds it."""
        ...

    def warm_up(self) -> None:
        """One-time costs of the backend's own parts, paid before the baseline."""
        ...

    def cached_items(self) -> Iterator[MMItem]:
        """Every item the renderer caches hold (the ledger counts their pixels)."""
        ...

    def event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """httpx event hooks for the run's client (to see what a library's own client sends)."""
        ...

    async def render(self, turn: Turn, text: list[int]) -> Rendered:
        """Processed modes: the turn's text and new images (each source fetched from the point's
        store and kept in `turn.conv.sources`) added to the conversation and rendered into the prompt."""
        ...

    async def rederive(self, turn: Turn, source: bytes, item: MMItem) -> MMItem:
        """The item with its pixels derived again from its source (a step that kept none)."""
        ...

    def step(
        self, turn: Turn, rendered: Rendered, stored: MultiModalData, completion: list[int],
        logprobs: list[float],
    ) -> Step:  # fmt: skip
        """A processed turn's step: the answer joins the conversation, the sidecar as the mode stores it."""
        ...

    async def raw_request(self, turn: Turn, text: list[int], media: list[str]) -> RawRequest:
        """Raw-media modes: the turn's text and media URLs (already in `turn.conv.media`) added to
        the conversation, and the request that carries it."""
        ...


BackendFactory = Callable[[ClientParts], Backend]
