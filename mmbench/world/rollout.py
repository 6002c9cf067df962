"""The rollout driver: K rollouts of N turns at once on one asyncio loop and one httpx client.

Each turn the environment adds its image(s) to the conversation, the renderer renders them
(pool, thread), the transport decides what ships, the request is built and posted, the reply is
checked, and the step is stored as the mode says. All K trajectories stay alive until every
rollout is done (as in an env worker) and are then handed to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from mmbench.config import PointConfig
from mmbench.procmem import malloc_trim, rss_bytes
from mmbench.transports.base import Transport
from mmbench.world.client import EngineReply, build_body, post_generate
from mmbench.world.codec import Codec, get_codec
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, SourceStore
from mmbench.world.renderer import RendererPool
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder

TRIM_AUTO_GROWTH = 64 * 1024**2  # trim_after_build=auto: trim when a build grew RSS this much
IMAGE_PAD_TOKEN = 151_655  # Qwen's <|image_pad|>
VOCAB = 150_000
HTTP_TIMEOUT_S = 600.0
# A 5xx on a request without null slots, or a failed connection (refused, reset, timed out), is
# retried up to PointConfig.retry_budget times: the first retry after 10 ms, each next one after
# twice as long, at most 1 s (the default budget of 8 waits 2.3 s in all, at most ~100 s at 100).
RETRY_FIRST_S = 0.01
RETRY_MAX_S = 1.0


class RolloutFailed(Exception):
    """A rollout that cannot complete; recorded with its cause, never raised past the driver."""


@dataclass(slots=True)
class Step:
    prompt_len: int
    completion_ids: list[int]
    logprobs: list[float]
    sidecar: MultiModalData  # as the transport stores it


@dataclass(slots=True)
class Conversation:
    """What the env worker holds for one rollout besides the steps: sources and the token stream."""

    sources: list[bytes] = field(default_factory=list)  # every encoded source, for the whole rollout
    tokens: array = field(default_factory=lambda: array("l"))


@dataclass(slots=True)
class RolloutCounters:
    requests: int = 0
    bytes_shipped: int = 0
    bytes_per_turn: list[int] = field(default_factory=list)
    full_items_sent: int = 0
    null_items_sent: int = 0
    fallbacks: int = 0
    retries: int = 0  # requests sent again after a 5xx without null slots or a failed connection
    extra_bytes: int = 0  # bytes of resends and retries: beyond what the turns ship without faults
    wrong_results: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    rederived: int = 0
    failed: bool = False
    failure: str | None = None


@dataclass(slots=True)
class Trajectory:
    rollout: int
    conversation: Conversation
    steps: list[Step]
    counters: RolloutCounters


SUM_FIELDS = (
    "requests", "bytes_shipped", "full_items_sent", "null_items_sent", "fallbacks",
    "wrong_results", "cache_hits", "cache_misses", "rederived", "retries", "extra_bytes",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    bytes_shipped: int
    full_items_sent: int
    null_items_sent: int
    fallbacks: int
    wrong_results: int
    cache_hits: int
    cache_misses: int
    rederived: int
    retries: int
    extra_bytes: int
    failed_rollouts: int
    bytes_per_turn: list[int]  # summed over rollouts, turn 1..N
    failures: list[str]

    @classmethod
    def of(cls, trajectories: list[Trajectory]) -> Totals:
        sums = {k: sum(getattr(t.counters, k) for t in trajectories) for k in SUM_FIELDS}
        width = max((len(t.counters.bytes_per_turn) for t in trajectories), default=0)
        per_turn = [
            sum(t.counters.bytes_per_turn[i] for t in trajectories if i < len(t.counters.bytes_per_turn))
            for i in range(width)
        ]
        failures = [f"rollout {t.rollout}: {t.counters.failure}" for t in trajectories if t.counters.failed]
        return cls(**sums, failed_rollouts=len(failures), bytes_per_turn=per_turn, failures=failures)


class World:
    """Everything one point needs in the client process: renderer pool, transport, codec."""

    def __init__(self, config: PointConfig, transport: Transport, source_cache: Path | None = None) -> None:
        self.config = config
        self.geometry = get_geometry(config.model)
        self.pool = RendererPool(self.geometry, config.pool_size, config.image_cache_max, config.dtype)
        self.transport = transport
        self.codec: Codec = get_codec(config.codec)
        w, h = config.image_wh
        self.source_spec = SourceSpec(w, h, config.image_format, config.content, config.seed)
        self.sources = SourceStore(self.source_spec, source_cache)
        self._gate: asyncio.Semaphore | None = None
        self.trims = 0  # trim_after_build trims done
        # (time.monotonic(), rollout, turn) at the end of every turn: the timeline's turn marks
        self.turn_ends: list[tuple[float, int, int]] = []

    def text_tokens(self, rollout: int, turn: int) -> np.ndarray:
        rng = np.random.default_rng([self.config.seed, rollout, turn, 1_000_003])
        return rng.integers(0, VOCAB, size=self.config.text_tokens_per_turn)

    async def _with_pixels(
        self, conv: Conversation, sidecar: MultiModalData, full_mask: list[bool], c: RolloutCounters
    ) -> MultiModalData:
        """Re-derive, through the renderer, the pixels of every full slot that has none."""
        items = list(sidecar.items)
        for i, (item, full) in enumerate(zip(items, full_mask, strict=True)):
            if full and not item.has_pixels:
                rendered = await self.pool.render(conv.sources[i])
                c.cache_hits += rendered.cache_hit
                c.cache_misses += not rendered.cache_hit
                c.rederived += 1
                items[i] = rendered.item
        return sidecar.with_items(items)

    async def _ship(
        self, http: httpx.AsyncClient, url: str, conv: Conversation, sidecar: MultiModalData,
        full_mask: list[bool], c: RolloutCounters, turn_bytes: list[int], turn: int,
    ) -> tuple[MultiModalData, EngineReply]:  # fmt: skip
        """Build the body once and post it until it gets an answer the caller acts on.

        An answer < 500, or any error answer to a request with null slots (the caller resends it
        in full once), is returned. A 5xx without null slots and a failed connection (refused,
        reset, timed out: an engine restarting) are retried, the same body again, within
        retry_budget and a bounded exponential backoff; then the rollout fails with the cause.
        Every send after the turn's first counts as extra bytes (the cost of the faults).
        """
        sidecar = await self._with_pixels(conv, sidecar, full_mask, c)
        async with self._build_gate():
            body = await asyncio.to_thread(self._build, conv, sidecar, full_mask)
        has_null = not all(full_mask)
        budget = self.config.retry_budget
        wait = RETRY_FIRST_S
        retries = 0
        while True:
            c.requests += 1
            c.bytes_shipped += len(body)
            if turn_bytes[0]:
                c.extra_bytes += len(body)
            turn_bytes[0] += len(body)
            c.full_items_sent += sum(full_mask)
            c.null_items_sent += len(full_mask) - sum(full_mask)
            try:
                reply = await post_generate(http, url, body, self.codec)
            except httpx.TransportError as exc:  # connect, read, write, protocol errors, timeouts
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except httpx.HTTPError as exc:
                raise RolloutFailed(f"turn {turn}: request failed: {type(exc).__name__}: {exc}") from None
            else:
                if reply.status < 500 or has_null:
                    return sidecar, reply
                cause = f"engine answered {reply.status}: {reply.error}"
            if retries >= budget:
                raise RolloutFailed(f"turn {turn}: {cause} (gave up after {retries} retries)")
            retries += 1
            c.retries += 1
            await asyncio.sleep(wait)
            wait = min(2 * wait, RETRY_MAX_S)

    def _build(self, conv: Conversation, sidecar: MultiModalData, full_mask: list[bool]) -> bytes:
        """One payload build, then the trim policy the client runs after it (trim_after_build)."""
        policy = self.config.trim_after_build
        before = rss_bytes() if policy == "auto" else 0
        body = build_body(
            self.codec, self.config.model, conv.tokens.tolist(), sidecar, full_mask,
            self.config.completion_tokens, self.config.dtype,
        )  # fmt: skip
        if policy == "always" or (policy == "auto" and rss_bytes() - before >= TRIM_AUTO_GROWTH):
            gc.collect()
            malloc_trim()
            self.trims += 1
        return body

    def _build_gate(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The cap on concurrent payload builds (max_inflight_builds; 0 is no cap)."""
        return self._gate if self._gate is not None else contextlib.nullcontext()

    async def rollout(self, http: httpx.AsyncClient, url: str, r: int) -> Trajectory:
        cfg = self.config
        conv = Conversation()
        steps: list[Step] = []
        c = RolloutCounters()
        stored = MultiModalData()
        try:
            for t in range(cfg.turns):
                conv.tokens.extend(self.text_tokens(r, t).tolist())
                new_h: list[str] = []
                new_p: list[Placeholder] = []
                new_i: list[MMItem] = []
                for i in range(cfg.images_per_turn):
                    source = await asyncio.to_thread(self.sources.get, r, t, i)
                    conv.sources.append(source)
                    rendered = await self.pool.render(source)
                    c.cache_hits += rendered.cache_hit
                    c.cache_misses += not rendered.cache_hit
                    n = self.geometry.layout(*self.source_spec_size).tokens
                    new_h.append(rendered.mm_hash)
                    new_p.append(Placeholder(len(conv.tokens), n))
                    new_i.append(rendered.item)
                    conv.tokens.extend([IMAGE_PAD_TOKEN] * n)
                sidecar = stored.extended(new_h, new_p, new_i)
                hashes = sidecar.hashes
                prompt_len = len(conv.tokens)
                turn_bytes = [0]
                mask = self.transport.plan(url, cfg.model, hashes)
                try:
                    sent, reply = await self._ship(http, url, conv, sidecar, mask, c, turn_bytes, t + 1)
                    if not reply.ok and not all(mask):
                        # The engine could not serve a null slot: forget, re-render, resend all once.
                        self.transport.on_error(url, cfg.model, hashes)
                        c.fallbacks += 1
                        mask = [True] * len(hashes)
                        sent, reply = await self._ship(http, url, conv, sent, mask, c, turn_bytes, t + 1)
                except RolloutFailed:
                    self.transport.on_error(url, cfg.model, hashes)
                    raise
                finally:
                    c.bytes_per_turn.append(turn_bytes[0])
                if not reply.ok:
                    self.transport.on_error(url, cfg.model, hashes)
                    raise RolloutFailed(f"turn {t + 1}: engine answered {reply.status}: {reply.error}")
                self.transport.on_success(url, cfg.model, hashes)
                c.wrong_results += _wrong(reply, sent)
                completion = [int(x) for x in reply.body.get("token_ids", [])]
                conv.tokens.extend(completion)
                stored = self.transport.stored(sent, mask)
                steps.append(Step(prompt_len, completion, list(reply.body.get("logprobs", [])), stored))
                self.turn_ends.append((time.monotonic(), r, t + 1))
                del sent, sidecar
        except RolloutFailed as exc:
            c.failed, c.failure = True, str(exc)
        return Trajectory(r, conv, steps, c)

    @property
    def source_spec_size(self) -> tuple[int, int]:
        return self.source_spec.width, self.source_spec.height

    async def run_async(self, url: str) -> list[Trajectory]:
        k = self.config.rollouts
        n = self.config.max_inflight_builds
        self._gate = asyncio.Semaphore(n) if n > 0 else None  # bound to this loop
        limits = httpx.Limits(max_connections=k, max_keepalive_connections=k)
        timeout = httpx.Timeout(HTTP_TIMEOUT_S, connect=30.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            return list(await asyncio.gather(*(self.rollout(http, url, r) for r in range(k))))

    def run(self, url: str) -> list[Trajectory]:
        return asyncio.run(self.run_async(url))


def _wrong(reply: EngineReply, sent: MultiModalData) -> int:
    """Items whose pixels, as the engine resolved them, differ from what the client meant."""
    got = reply.body.get("item_checksums")
    want = [item.checksum for item in sent.items]
    if not isinstance(got, list) or len(got) != len(want):
        return len(want)
    return sum(1 for g, w in zip(got, want, strict=True) if g != w)
