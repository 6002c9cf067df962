"""The rollout driver: K rollouts of N turns at once on one asyncio loop and one httpx client.

It composes the world's parts (sources, codec, wire; the renderer through its backend) with a
transport, so it sits above both. Each turn the environment adds its image(s) to the conversation;
then
- processed modes: the backend's renderer renders them (pool, thread), the transport decides what each item
  ships as (pixels or a null slot), the body is built and posted, the reply's checksums checked,
  and the step is stored as the transport says;
- raw-media modes: the image is kept as the URL the message carries (a data: URL, or a file://
  reference written once to the shared asset directory), the body carries every image's URL in
  prompt order and the rendered tokens with one `<|image_pad|>` per image, and the engine's answer
  (the expanded prompt and each image's placeholder) becomes the step.
All K trajectories stay alive until every rollout is done (as in an env worker) and are then
handed to the caller. Who renders (mmbench's simulated renderer, or the `renderers` library) is the
driver's backend (mmbench.rollout.backend); a turn's state travels as one `Turn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import numpy as np

from mmbench.config import PointConfig
from mmbench.facts import facts_of
from mmbench.rollout import raw
from mmbench.rollout.backend import BackendFactory, ClientParts
from mmbench.rollout.sim import SimBackend
from mmbench.rollout.state import RolloutCounters, RolloutFailed, Step, Trajectory
from mmbench.rollout.turn import Rendered, Session, Turn, completion_of
from mmbench.transports.base import Ship, Transport
from mmbench.world.client import EngineReply, build_body, post_generate, tls_context
from mmbench.world.codec import get_codec
from mmbench.world.images import SourceSpec, SourceStore
from mmbench.world.media import AssetStore
from mmbench.world.procmem import malloc_trim, rss_bytes
from mmbench.world.sidecar import MMItem, MultiModalData

TRIM_AUTO_GROWTH = 64 * 1024**2  # trim_after_build=auto: trim when a build grew RSS this much
VOCAB = 150_000
HTTP_TIMEOUT_S = 600.0
# A 5xx on a request without null slots, or a failed connection (refused, reset, timed out), is
# retried up to PointConfig.retry_budget times: the first retry after 10 ms, each next one after
# twice as long, at most 1 s (the default budget of 8 waits 2.3 s in all, at most ~100 s at 100).
RETRY_FIRST_S = 0.01
RETRY_MAX_S = 1.0
# session_header on: every request of a rollout carries its id, as prime-rl and SkyRL send it to
# vllm-router (whose consistent_hash and sticky_least_loaded policies key on it). Set in each
# rollout's task, read by an httpx hook, so every request a backend sends carries it (the renderers
# library's own client too).
SESSION_HEADER = "X-Session-ID"
_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("mmbench_session", default=None)


def session_id(rollout: int) -> str:
    return f"rollout-{rollout}"


async def _add_session(request: httpx.Request) -> None:
    sid = _SESSION.get()
    if sid is not None:
        request.headers[SESSION_HEADER] = sid


class RolloutDriver:
    """One point's client: its K rollouts of N turns through a transport, each turn rendered by the
    backend (mmbench's simulated renderer by default)."""

    def __init__(
        self, config: PointConfig, transport: Transport, source_cache: Path | None = None,
        asset_dir: Path | None = None, backend: BackendFactory = SimBackend,
    ) -> None:  # fmt: skip
        self.config = config
        self.facts = facts_of(config)
        self.transport = transport
        w, h = config.image_wh
        self.source_spec = SourceSpec(w, h, config.image_format, config.content, config.seed)
        sources = SourceStore(self.source_spec, source_cache, config.group_size)
        self.parts = ClientParts(self.facts, get_codec(config.codec), sources)
        self.assets = AssetStore(asset_dir) if transport.media == "file" and asset_dir is not None else None
        if transport.media == "file" and self.assets is None:
            raise ValueError(f"mode {transport.name} needs an asset directory shared with the engine")
        self.backend = backend(self.parts)
        self.trims = 0  # trim_after_build trims done
        # (time.monotonic(), rollout, turn) at the end of every turn: the timeline's turn marks
        self.turn_ends: list[tuple[float, int, int]] = []

    def warm_up(self) -> None:
        """One-time costs of the backend's own parts, paid before the baseline (the worker warms the
        sim's shared code paths itself)."""
        self.backend.warm_up()

    def text_tokens(self, rollout: int, turn: int) -> list[int]:
        rng = np.random.default_rng([self.config.seed, rollout, turn, 1_000_003])
        return rng.integers(0, VOCAB, size=self.config.text_tokens_per_turn).tolist()  # type: ignore[no-any-return]

    @property
    def image_tokens(self) -> int:
        """Placeholder tokens per image in a processed prompt (Kimi: one, the engine expands it)."""
        return self.facts.layout.placeholder_tokens

    # --- sending -------------------------------------------------------------------------

    async def _post(self, turn: Turn, body: bytes, plan: list[Ship]) -> EngineReply:
        """Post a body until it gets an answer the caller acts on (see `_attempts`)."""
        s = turn.session
        return await self._attempts(
            turn, lambda: post_generate(s.http, s.url, body, self.parts.codec), lambda: len(body), plan
        )

    async def _attempts(
        self,
        turn: Turn,
        send: Callable[[], Awaitable[EngineReply]],
        size: Callable[[], int],
        plan: list[Ship],
    ) -> EngineReply:
        """Send a request until it gets an answer the caller acts on.

        `send` makes one attempt (mmbench's own post, or the renderers library's client) and
        `size` says how many body bytes that attempt sent. An answer < 500, or any error answer to
        a request with null slots (the caller resends it in full once), is returned. A 5xx without
        null slots and a failed connection (refused, reset, timed out: an engine restarting) are
        retried, the same request again, within retry_budget and a bounded exponential backoff; then
        the rollout fails with the cause. Every send after the turn's first counts as extra bytes
        (the cost of the faults).
        """
        c = turn.counters
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
                raise RolloutFailed(
                    f"turn {turn.number}: request failed: {type(exc).__name__}: {exc}"
                ) from None
            else:
                c.latencies.append(time.perf_counter() - t0)
                if reply.status < 500 or has_null:
                    return reply
                cause = f"engine answered {reply.status}: {reply.error}"
            finally:
                turn.count_attempt(size(), plan)
            if retries >= budget:
                raise RolloutFailed(f"turn {turn.number}: {cause} (gave up after {retries} retries)")
            retries += 1
            c.retries += 1
            await asyncio.sleep(wait)
            wait = min(2 * wait, RETRY_MAX_S)

    async def _with_pixels(self, turn: Turn, sidecar: MultiModalData, plan: list[Ship]) -> MultiModalData:
        """Re-derive, through the backend's renderer, the pixels of every item shipped in full that
        has none."""
        items = list(sidecar.items)
        for i, (item, ship) in enumerate(zip(items, plan, strict=True)):
            if ship is Ship.PIXELS and not item.has_pixels:
                items[i] = await self.backend.rederive(turn, turn.conv.sources[i], item)
                turn.counters.rederived += 1
        return sidecar.with_items(items)

    async def _ship(
        self, turn: Turn, rendered: Rendered, sidecar: MultiModalData, plan: list[Ship]
    ) -> tuple[MultiModalData, EngineReply]:
        """The processed path: pixels re-derived where needed, the body built once, then posted."""
        sidecar = await self._with_pixels(turn, sidecar, plan)
        async with turn.session.build_gate():
            body = await asyncio.to_thread(self._build, rendered, sidecar, plan)
        return sidecar, await self._post(turn, body, plan)

    def _build(self, rendered: Rendered, sidecar: MultiModalData, plan: list[Ship]) -> bytes:
        """One payload build, then the trim policy the client runs after it (trim_after_build)."""
        policy = self.config.trim_after_build
        before = rss_bytes() if policy == "auto" else 0
        body = build_body(
            self.parts.codec, self.config.model, rendered.prompt(), sidecar,
            [s is Ship.PIXELS for s in plan], self.config.completion_tokens, self.config.dtype,
        )  # fmt: skip
        if policy == "always" or (policy == "auto" and rss_bytes() - before >= TRIM_AUTO_GROWTH):
            gc.collect()
            malloc_trim()
            self.trims += 1
        return body

    # --- turns ---------------------------------------------------------------------------

    async def _processed_turn(self, turn: Turn, text: list[int]) -> Step:
        rendered = await self.backend.render(turn, text)
        sent, reply, plan = await self._exchange(turn, rendered)
        completion, logprobs = completion_of(reply.body)  # top level, or a vLLM's `choices`
        return self.backend.step(turn, rendered, self.transport.stored(sent, plan), completion, logprobs)

    async def _exchange(
        self, turn: Turn, rendered: Rendered
    ) -> tuple[MultiModalData, EngineReply, list[Ship]]:
        """A processed turn's request as the transport plans it, its one full resend where the
        engine could not serve a null slot, and the answer checked: what was sent (pixels
        re-derived where shipped), the engine's reply and the final plan."""
        model, url, c = self.config.model, turn.session.url, turn.counters
        hashes = rendered.sidecar.hashes
        plan = self.transport.plan(url, model, hashes)
        try:
            sent, reply = await self._ship(turn, rendered, rendered.sidecar, plan)
            if not reply.ok and Ship.NULL in plan:
                # The engine could not serve a null slot: forget, re-render, resend all once.
                self.transport.on_error(url, model, hashes)
                c.fallbacks += 1
                c.fallback_error = c.fallback_error or f"HTTP {reply.status}: {reply.error}"[:300]
                plan = [Ship.PIXELS] * len(hashes)
                sent, reply = await self._ship(turn, rendered, sent, plan)
        except RolloutFailed:
            self.transport.on_error(url, model, hashes)
            raise
        if not reply.ok:
            self.transport.on_error(url, model, hashes)
            raise RolloutFailed(f"turn {turn.number}: engine answered {reply.status}: {reply.error}")
        self.transport.on_success(url, model, hashes)
        wrong = _wrong(reply, sent)
        if wrong is None:  # an engine that returns no checksums (a vLLM): these items are unverified
            c.unverified += len(sent)
        else:
            c.wrong_results += wrong
        return sent, reply, plan

    async def _raw_turn(self, turn: Turn, text: list[int]) -> Step:
        cfg, conv = self.config, turn.conv
        media: list[str] = []
        for i in range(cfg.images_per_turn):
            source = await asyncio.to_thread(self.parts.sources.get, turn.rollout, turn.index, i)
            media.append(
                await asyncio.to_thread(
                    raw.media_url, self.transport.media, source, cfg.image_format, self.assets
                )
            )
            del source
        conv.media.extend(media)
        request = await self.backend.raw_request(turn, text, media)
        plan = self.transport.plan(turn.session.url, cfg.model, conv.media)
        reply = await self._attempts(turn, request.send, request.size, plan)
        if not reply.ok:
            raise RolloutFailed(f"turn {turn.number}: engine answered {reply.status}: {reply.error}")
        prompt, placeholders, checksums = raw.read_answer(reply.body, len(conv.media), turn.number)
        raw.keep_checksums(turn.counters, reply.body, checksums)
        return request.step(reply, prompt, placeholders)

    async def _turn(self, turn: Turn) -> Step:
        """One turn of one rollout: the environment's text and image(s), the request, the step."""
        text = self.text_tokens(turn.rollout, turn.index)
        if self.transport.renders:
            return await self._processed_turn(turn, text)
        return await self._raw_turn(turn, text)

    async def rollout(self, session: Session, r: int) -> Trajectory:
        if self.config.session_header == "on":
            _SESSION.set(session_id(r))  # this rollout's task (gather runs each in its own)
        try:
            return await self._rollout(session, r)
        finally:
            await self._finish_session(session, r)

    async def _finish_session(self, session: Session, r: int) -> None:
        """sticky_least_loaded keeps a session's replica for 2 h unless told it ended (prime-rl calls
        /finish_session at a rollout's end): told, where mmbench runs that router."""
        cfg = self.config
        if cfg.replicas and cfg.router_policy == "sticky_least_loaded" and cfg.session_header == "on":
            with contextlib.suppress(httpx.HTTPError):
                await session.http.post(f"{session.url}/finish_session", params={"session_id": session_id(r)})

    async def _rollout(self, session: Session, r: int) -> Trajectory:
        conv = self.backend.conversation()
        steps: list[Step] = []
        c = RolloutCounters()
        try:
            for t in range(self.config.turns):
                turn = Turn(session, r, t, conv, steps[-1] if steps else None, c)
                try:
                    step = await self._turn(turn)
                finally:
                    c.bytes_per_turn.append(turn.sent_bytes)
                steps.append(step)
                self.turn_ends.append((time.monotonic(), r, t + 1))
        except RolloutFailed as exc:
            c.failed, c.failure = True, str(exc)
        return Trajectory(r, conv, steps, c)

    def _http_client(self) -> httpx.AsyncClient:
        k = self.config.rollouts
        limits = httpx.Limits(max_connections=k, max_keepalive_connections=k)
        timeout = httpx.Timeout(HTTP_TIMEOUT_S, connect=30.0)
        hooks = self.backend.event_hooks()
        if self.config.session_header == "on":
            hooks = {**hooks, "request": [_add_session, *hooks.get("request", [])]}
        return httpx.AsyncClient(verify=tls_context(), limits=limits, timeout=timeout, event_hooks=hooks)

    async def run_async(self, url: str) -> list[Trajectory]:
        k = self.config.rollouts
        n = self.config.max_inflight_builds
        async with self._http_client() as http:
            session = Session(http, url, asyncio.Semaphore(n) if n > 0 else None)  # bound to this loop
            return list(await asyncio.gather(*(self.rollout(session, r) for r in range(k))))

    def run(self, url: str) -> list[Trajectory]:
        return asyncio.run(self.run_async(url))

    # --- after the run -------------------------------------------------------------------

    def cached_items(self) -> Iterator[MMItem]:
        """Every item the renderer caches hold (the ledger counts their pixels)."""
        return self.backend.cached_items()

    @staticmethod
    def media_checks(trajectories: list[Trajectory]) -> list[tuple[int, int, int]]:
        """(rollout, image index, the engine's checksum) of every raw-media item, kept small so the
        trajectories can be dropped before the check runs."""
        return [(t.rollout, i, s) for t in trajectories for i, s in t.counters.media_checksums]

    def count_wrong_media(self, checks: list[tuple[int, int, int]]) -> int:
        """Raw-media items whose pixels, as the engine derived them, differ from the client's own
        derivation (done here, after the measured phase, once per distinct image)."""
        cfg = self.config
        return raw.count_wrong(
            checks, self.parts.sources, self.facts.geometry, cfg.dtype, cfg.images_per_turn
        )


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
