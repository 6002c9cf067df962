"""What a library-backed rollout holds: the chat as the library takes it, and steps as it returns
them. No import of the library here, so the accounting can read these without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmbench.rollout.state import Conversation, Step

if TYPE_CHECKING:
    from renderers.base import RenderedTokens


@dataclass(slots=True)
class Chat(Conversation):
    """What the env worker holds for one rollout besides the steps: the chat messages as the
    library takes them (user text and image parts, assistant answers). `sources` lists the same
    encoded images (shared, not copied), in prompt order, for re-deriving pixels."""

    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class LibraryStep(Step):
    """A step as the library returns it. Its `sidecar` is empty: the library's own is in `prompt`."""

    prompt: RenderedTokens | None = None  # processed: the renderer's output, its sidecar as stored
    result: dict[str, Any] | None = None  # raw: what renderers.client.generate returned
