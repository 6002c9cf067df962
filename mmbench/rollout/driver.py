"""The rollout driver: K rollouts of N turns at once on one asyncio loop and one httpx client.

It composes the world's parts (sources, renderer pool, codec, wire) with a transport, so it sits
above both. Each turn the environment adds its image(s) to the conversation; then
- processed modes: the renderer renders them (pool, thread), the transport decides what each item
  ships as (pixels or a null slot), the body is built and posted, the reply's checksums checked,
  and the step is stored as the transport says;
- raw-media modes: the image is kept as the URL the message carries (a data: URL, or a file://
  reference written once to the shared asset directory), the body carries every image's URL in
  prompt order and the rendered tokens with one `<|image_pad|>` per image, and the engine's answer
  (the expanded prompt and each image's placeholder) becomes the step.
All K trajectories stay alive until every rollout is done (as in an env worker) and are then
handed to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mmbench.config import PointConfig
from mmbench.rollout import raw
from mmbench.rollout.state import Conversation, RolloutCounters, RolloutFailed, Step, Trajectory
from mmbench.transports.base import Ship, Transport
from mmbench.world.client import EngineReply, build_body, build_raw_body, post_generate, tls_context
from mmbench.world.codec import Codec, get_codec
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, SourceStore
from mmbench.world.media import AssetStore
from mmbench.world.procmem import malloc_trim, rss_bytes
from mmbench.world.renderer import RendererPool
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from mmbench.world.wire import IMAGE_PAD_TOKEN

TRIM_AUTO_GROWTH = 64 * 1024**2  # trim_after_build=auto: trim when a build grew RSS this much
VOCAB = 150_000
HTTP_TIMEOUT_S = 600.0
# A 5xx on a request without null slots, or a failed connection (refused, reset, timed out), is
# retried up to PointConfig.retry_budget times: the first retry after 10 ms, each next one after
# twice as long, at most 1 s (the default budget of 8 waits 2.3 s in all, at most ~100 s at 100).
RETRY_FIRST_S = 0.01
RETRY_MAX_S = 1.0
NO_SIDECAR = MultiModalData()  # what a raw-media step keeps of a sidecar: nothing (never mutated)


class World:
    """Everything one point needs in the client process: renderer pool, transport, codec, media."""

    def __init__(
        self, config: PointConfig, transport: Transport, source_cache: Path | None = None,
        asset_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.geometry = get_geometry(config.model)
        self.pool = RendererPool(self.geometry, config.pool_size, config.image_cache_max, config.dtype)
        self.transport = transport
        self.codec: Codec = get_codec(config.codec)
        w, h = config.image_wh
        self.source_spec = SourceSpec(w, h, config.image_format, config.content, config.seed)
        self.sources = SourceStore(self.source_spec, source_cache)
        self.assets = AssetStore(asset_dir) if transport.media == "file" and asset_dir is not None else None
        if transport.media == "file" and self.assets is None:
            raise ValueError(f"mode {transport.name} needs an asset directory shared with the engine")
        self._gate: asyncio.Semaphore | None = None
        self.trims = 0  # trim_after_build trims done
        # (time.monotonic(), rollout, turn) at the end of every turn: the timeline's turn marks
        self.turn_ends: list[tuple[float, int, int]] = []

    def warm_up(self) -> None:
        """One-time costs of this world's own parts, paid before the baseline (the worker warms the
        sim's shared code paths itself)."""

    def text_tokens(self, rollout: int, turn: int) -> list[int]:
        rng = np.random.default_rng([self.config.seed, rollout, turn, 1_000_003])
        return rng.integers(0, VOCAB, size=self.config.text_tokens_per_turn).tolist()  # type: ignore[no-any-return]

    @property
    def image_tokens(self) -> int:
        """Placeholder tokens per image in a processed prompt (Kimi: one, the engine expands it)."""
        return self.geometry.layout(self.source_spec.width, self.source_spec.height).placeholder_tokens

    # --- sending -------------------------------------------------------------------------

    async def _post(
        self, http: httpx.AsyncClient, url: str, body: bytes, plan: list[Ship], c: RolloutCounters,
        turn_bytes: list[int], turn: int,
    ) -> EngineReply:  # fmt: skip
        """Post a body until it gets an answer the caller acts on (see `_attempts`)."""
        return await self._attempts(
            lambda: post_generate(http, url, body, self.codec), lambda: len(body), plan, c, turn_bytes, turn
        )

    async def _attempts(
        self, send: Callable[[], Awaitable[EngineReply]], size: Callable[[], int], plan: list[Ship],
        c: RolloutCounters, turn_bytes: list[int], turn: int,
    ) -> EngineReply:  # fmt: skip
        """Send a request until it gets an answer the caller acts on.

        `send` makes one attempt (mmbench's own post, or the renderers library's client) and
        `size` says how many body bytes that attempt sent. An answer < 500, or any error answer to
        a request with null slots (the caller resends it in full once), is returned. A 5xx without
        null slots and a failed connection (refused, reset, timed out: an engine restarting) are
        retried, the same request again, within retry_budget and a bounded exponential backoff; then
        the rollout fails with the cause. Every send after the turn's first counts as extra bytes
        (the cost of the faults).
        """
        has_null = Ship.NULL in plan
        budget = self.config.retry_budget
        wait = RETRY_FIRST_S
        retries = 0
        while True:
            t0 = time.perf_counter()
            try:
                reply = await send()
            except httpx.TransportError as exc:  # connect, read, write, protocol errors, timeouts
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except httpx.HTTPError as exc:
                raise RolloutFailed(f"turn {turn}: request failed: {type(exc).__name__}: {exc}") from None
            else:
                c.latencies.append(time.perf_counter() - t0)
                if reply.status < 500 or has_null:
                    return reply
                cause = f"engine answered {reply.status}: {reply.error}"
            finally:
                _count_attempt(size(), plan, c, turn_bytes)
            if retries >= budget:
                raise RolloutFailed(f"turn {turn}: {cause} (gave up after {retries} retries)")
            retries += 1
            c.retries += 1
            await asyncio.sleep(wait)
            wait = min(2 * wait, RETRY_MAX_S)

    async def _with_pixels(
        self, conv: Conversation, sidecar: MultiModalData, plan: list[Ship], c: RolloutCounters
    ) -> MultiModalData:
        """Re-derive, through the renderer, the pixels of every item shipped in full that has none."""
        items = list(sidecar.items)
        for i, (item, ship) in enumerate(zip(items, plan, strict=True)):
            if ship is Ship.PIXELS and not item.has_pixels:
                rendered = await self.pool.render(conv.sources[i])
                c.cache_hits += rendered.cache_hit
                c.cache_misses += not rendered.cache_hit
                c.rederived += 1
                items[i] = rendered.item
        return sidecar.with_items(items)

    async def _ship(
        self, http: httpx.AsyncClient, url: str, conv: Conversation, sidecar: MultiModalData,
        plan: list[Ship], c: RolloutCounters, turn_bytes: list[int], turn: int,
    ) -> tuple[MultiModalData, EngineReply]:  # fmt: skip
        """The processed path: pixels re-derived where needed, the body built once, then posted."""
        sidecar = await self._with_pixels(conv, sidecar, plan, c)
        async with self._build_gate():
            body = await asyncio.to_thread(self._build, conv, sidecar, plan)
        return sidecar, await self._post(http, url, body, plan, c, turn_bytes, turn)

    def _build(self, conv: Conversation, sidecar: MultiModalData, plan: list[Ship]) -> bytes:
        """One payload build, then the trim policy the client runs after it (trim_after_build)."""
        policy = self.config.trim_after_build
        before = rss_bytes() if policy == "auto" else 0
        body = build_body(
            self.codec, self.config.model, self._prompt_tokens(conv), sidecar,
            [s is Ship.PIXELS for s in plan], self.config.completion_tokens, self.config.dtype,
        )  # fmt: skip
        if policy == "always" or (policy == "auto" and rss_bytes() - before >= TRIM_AUTO_GROWTH):
            gc.collect()
            malloc_trim()
            self.trims += 1
        return body

    def _prompt_tokens(self, conv: Conversation) -> list[int]:
        """The expanded prompt a processed request carries."""
        return conv.tokens.tolist()  # type: ignore[no-any-return]

    def _build_gate(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The cap on concurrent payload builds (max_inflight_builds; 0 is no cap)."""
        return self._gate if self._gate is not None else contextlib.nullcontext()

    # --- turns ---------------------------------------------------------------------------

    async def _processed_turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Conversation,
        stored: MultiModalData, c: RolloutCounters, turn_bytes: list[int],
    ) -> tuple[Step, MultiModalData]:  # fmt: skip
        cfg = self.config
        new_h: list[str] = []
        new_p: list[Placeholder] = []
        new_i: list[MMItem] = []
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.sources.get, r, t, i)
            conv.sources.append(source)
            rendered = await self.pool.render(source)
            c.cache_hits += rendered.cache_hit
            c.cache_misses += not rendered.cache_hit
            n = self.image_tokens
            new_h.append(rendered.mm_hash)
            new_p.append(Placeholder(len(conv.tokens), n))
            new_i.append(rendered.item)
            conv.tokens.extend([IMAGE_PAD_TOKEN] * n)
        sidecar = stored.extended(new_h, new_p, new_i)
        prompt_len = len(conv.tokens)
        sent, reply, plan = await self._exchange(http, url, conv, sidecar, c, turn_bytes, t + 1)
        completion, logprobs = completion_of(reply.body)
        step = Step(prompt_len, completion, logprobs, self.transport.stored(sent, plan))
        return step, step.sidecar

    async def _exchange(
        self, http: httpx.AsyncClient, url: str, conv: Conversation, sidecar: MultiModalData,
        c: RolloutCounters, turn_bytes: list[int], turn: int,
    ) -> tuple[MultiModalData, EngineReply, list[Ship]]:  # fmt: skip
        """A processed turn's request as the transport plans it, its one full resend where the
        engine could not serve a null slot, and the answer checked: what was sent (pixels
        re-derived where shipped), the engine's reply and the final plan."""
        cfg = self.config
        hashes = sidecar.hashes
        plan = self.transport.plan(url, cfg.model, hashes)
        try:
            sent, reply = await self._ship(http, url, conv, sidecar, plan, c, turn_bytes, turn)
            if not reply.ok and Ship.NULL in plan:
                # The engine could not serve a null slot: forget, re-render, resend all once.
                self.transport.on_error(url, cfg.model, hashes)
                c.fallbacks += 1
                c.fallback_error = c.fallback_error or f"HTTP {reply.status}: {reply.error}"[:300]
                plan = [Ship.PIXELS] * len(hashes)
                sent, reply = await self._ship(http, url, conv, sent, plan, c, turn_bytes, turn)
        except RolloutFailed:
            self.transport.on_error(url, cfg.model, hashes)
            raise
        if not reply.ok:
            self.transport.on_error(url, cfg.model, hashes)
            raise RolloutFailed(f"turn {turn}: engine answered {reply.status}: {reply.error}")
        self.transport.on_success(url, cfg.model, hashes)
        wrong = _wrong(reply, sent)
        if wrong is None:  # an engine that returns no checksums (a vLLM): these items are unverified
            c.unverified += len(sent)
        else:
            c.wrong_results += wrong
        return sent, reply, plan

    async def _raw_turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Conversation, c: RolloutCounters,
        turn_bytes: list[int],
    ) -> Step:  # fmt: skip
        cfg = self.config
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.sources.get, r, t, i)
            media = await asyncio.to_thread(
                raw.media_url, self.transport.media, source, cfg.image_format, self.assets
            )
            conv.media.append(media)
            conv.rendered.append(IMAGE_PAD_TOKEN)
            del source
        plan = self.transport.plan(url, cfg.model, conv.media)
        async with self._build_gate():
            body = await asyncio.to_thread(
                build_raw_body,
                self.codec,
                cfg.model,
                conv.rendered.tolist(),
                conv.media,
                cfg.completion_tokens,
            )
        reply = await self._post(http, url, body, plan, c, turn_bytes, t + 1)
        del body
        if not reply.ok:
            raise RolloutFailed(f"turn {t + 1}: engine answered {reply.status}: {reply.error}")
        prompt, placeholders, checksums = raw.read_answer(reply.body, len(conv.media), t + 1)
        raw.keep_checksums(c, reply.body, checksums)
        # The expanded stream is the engine's prompt; the client renders from its own next turn.
        del conv.tokens[:]
        conv.tokens.extend(prompt)
        completion, logprobs = completion_of(reply.body)
        conv.rendered.extend(completion)
        return Step(len(prompt), completion, logprobs, NO_SIDECAR, placeholders)

    async def _turn(
        self, http: httpx.AsyncClient, url: str, r: int, t: int, conv: Conversation, prev: Step | None,
        c: RolloutCounters, turn_bytes: list[int],
    ) -> Step:  # fmt: skip
        """One turn of one rollout: the environment's text and image(s), the request, the step."""
        text = self.text_tokens(r, t)
        if self.transport.renders:
            conv.tokens.extend(text)
            stored = prev.sidecar if prev is not None else MultiModalData()
            step, _ = await self._processed_turn(http, url, r, t, conv, stored, c, turn_bytes)
        else:
            conv.rendered.extend(text)
            step = await self._raw_turn(http, url, r, t, conv, c, turn_bytes)
        conv.tokens.extend(step.completion_ids)
        return step

    def _conversation(self) -> Conversation:
        return Conversation()

    async def rollout(self, http: httpx.AsyncClient, url: str, r: int) -> Trajectory:
        conv = self._conversation()
        steps: list[Step] = []
        c = RolloutCounters()
        try:
            for t in range(self.config.turns):
                turn_bytes = [0]
                prev = steps[-1] if steps else None
                try:
                    step = await self._turn(http, url, r, t, conv, prev, c, turn_bytes)
                finally:
                    c.bytes_per_turn.append(turn_bytes[0])
                steps.append(step)
                self.turn_ends.append((time.monotonic(), r, t + 1))
        except RolloutFailed as exc:
            c.failed, c.failure = True, str(exc)
        return Trajectory(r, conv, steps, c)

    def _http_client(self) -> httpx.AsyncClient:
        k = self.config.rollouts
        limits = httpx.Limits(max_connections=k, max_keepalive_connections=k)
        timeout = httpx.Timeout(HTTP_TIMEOUT_S, connect=30.0)
        return httpx.AsyncClient(verify=tls_context(), limits=limits, timeout=timeout)

    async def run_async(self, url: str) -> list[Trajectory]:
        k = self.config.rollouts
        n = self.config.max_inflight_builds
        self._gate = asyncio.Semaphore(n) if n > 0 else None  # bound to this loop
        async with self._http_client() as http:
            return list(await asyncio.gather(*(self.rollout(http, url, r) for r in range(k))))

    def run(self, url: str) -> list[Trajectory]:
        return asyncio.run(self.run_async(url))

    # --- after the run -------------------------------------------------------------------

    def cached_items(self) -> Iterator[MMItem]:
        """Every item the renderer caches hold (the ledger counts their pixels)."""
        return self.pool.cached_items()

    @staticmethod
    def media_checks(trajectories: list[Trajectory]) -> list[tuple[int, int, int]]:
        """(rollout, image index, the engine's checksum) of every raw-media item, kept small so the
        trajectories can be dropped before the check runs."""
        return [(t.rollout, i, s) for t in trajectories for i, s in t.counters.media_checksums]

    def count_wrong_media(self, checks: list[tuple[int, int, int]]) -> int:
        """Raw-media items whose pixels, as the engine derived them, differ from the client's own
        derivation (done here, after the measured phase, once per distinct image)."""
        cfg = self.config
        return raw.count_wrong(checks, self.sources, self.geometry, cfg.dtype, cfg.images_per_turn)


def _count_attempt(nbytes: int, plan: list[Ship], c: RolloutCounters, turn_bytes: list[int]) -> None:
    """One attempt's request, body bytes and items in the counters (every attempt counts, also one
    refused at connect)."""
    c.requests += 1
    c.bytes_shipped += nbytes
    if turn_bytes[0]:
        c.extra_bytes += nbytes
    turn_bytes[0] += nbytes
    c.full_items_sent += plan.count(Ship.PIXELS)
    c.null_items_sent += plan.count(Ship.NULL)
    c.media_items_sent += plan.count(Ship.MEDIA)


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


def _wrong(reply: EngineReply, sent: MultiModalData) -> int | None:
    """Items whose pixels, as the engine resolved them, differ from what the client meant; None
    where the engine returns no checksums at all (a vLLM: nothing to compare with)."""
    if "item_checksums" not in reply.body:
        return None
    got = reply.body.get("item_checksums")
    want = [item.checksum for item in sent.items]
    if not isinstance(got, list) or len(got) != len(want):
        return len(want)
    return sum(1 for g, w in zip(got, want, strict=True) if g != w)
