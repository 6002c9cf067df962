"""The engine's HTTP application (Starlette): decode items, resolve null slots, answer.

It does the real work the inference server's multimodal front end does for a request: parse
the JSON body, base64-decode and deserialize every full item, resolve every null slot from
the mm-hash cache (or fail as vLLM 0.32 does: HTTP 500, "Expected a cached item for mm_hash ...
(P0/P1 cache drift ...)", retryable, the engine serving on), and return a small
completion plus a checksum of the pixels it resolved for each item, so the client can prove
that what the engine used is what it meant to send.

Raw media (`content_parts`): each image URL is loaded (a data: URL, or a file:// URL inside the
allowed local media directory), decoded and hashed as the client's renderer would; a cached
processed item is reused (a hit still decodes and hashes), otherwise the image is preprocessed
with the same code as the client's renderer (mmbench.world.renderer) and cached. Each
`<|image_pad|>` of the prompt is expanded to the image's tokens, and the answer carries
`prompt_token_ids` and `mm_placeholders` as vLLM's does.

Faults, each off by default and seeded from EngineConfig.seed: `evict_rate` drops each cached
item with that probability at every request, `error_rate` answers that fraction of requests with
HTTP 500 (after reading the body, before touching the cache), `delay_ms` sleeps in the handler
(so many requests are in flight at once), and `restart_every` calls `on_quota` once the N-th
request has been answered (the process entry then exits, and its supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
import psutil
from PIL import Image
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mmbench.errors import MmbenchError
from mmbench.world.codec import CodecError, DecodedItem, decode_item, pixel_checksum
from mmbench.world.engine.cache import MMItemCache
from mmbench.world.engine.stats import EngineStats
from mmbench.world.geometry import MODELS, Geometry, validate_source_size
from mmbench.world.media import MediaError, load_media
from mmbench.world.procmem import malloc_trim
from mmbench.world.renderer import decode_image, image_hash, process_image
from mmbench.world.wire import (
    GENERATE_PATH,
    IMAGE_PAD_TOKEN,
    MODALITY,
    GenerateRequest,
    WireError,
    parse_request,
)

MAX_MODEL_LEN = 2**31 - 1  # what /v1/models reports: the engine bounds bodies, not prompts
# A null slot whose hash the engine does not hold: vLLM 0.32's status and retryability (HTTP 500,
# "P0/P1 cache drift"), with the older message that names the hash.
MISSING_ITEM = "Expected a cached item for mm_hash"
MISSING_ITEM_HINT = "P0/P1 cache drift: the item is not in this engine's cache; resend it with its data"
MERGE_TOKENS = 4  # placeholder tokens per image = grid_h * grid_w / merge^2, merge 2 in both presets


@dataclass(frozen=True, slots=True)
class EngineConfig:
    cache_bytes: int = 4 * 1024**3
    max_body_bytes: int = 2 * 1024**3
    completion_tokens: int = 16
    seed: int = 0
    # --- faults (each off at its default)
    evict_rate: float = 0.0  # each cached item dropped with this probability per request
    error_rate: float = 0.0  # this fraction of requests answered with HTTP 500
    delay_ms: float = 0.0  # slept in the handler of every request
    restart_every: int = 0  # the process exits after answering this many requests (0 = never)
    # --- raw media
    allowed_media_dir: str | None = None  # file:// URLs are read only below it (None: refused)
    dtype: str = "float32"  # the dtype the engine preprocesses raw media to
    # --- debugging
    request_log: str | None = None  # one JSON line per /generate request appended here (None: off)

    def __post_init__(self) -> None:
        for name in ("evict_rate", "error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.delay_ms < 0 or self.restart_every < 0:
            raise ValueError("delay_ms and restart_every must be >= 0")


@dataclass(slots=True)
class _Logged:
    """What the request log says of one request: when it arrived, when its body was read (seconds
    since the engine started) and what it carried."""

    arrived: float
    read: float | None = None
    hashes: list[str] = field(default_factory=list)
    null_slots: int = 0
    media: int = 0


@dataclass(slots=True)
class EngineCounters:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    bytes_received: int = 0
    items_full: int = 0
    items_null: int = 0
    injected_errors: int = 0
    injected_evictions: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # most requests being handled at once
    preprocess_calls: int = 0  # raw media preprocessed (cache misses); a cache hit only decodes and hashes
    media_bytes: int = 0  # encoded media bytes loaded from data: and file:// URLs
    status_counts: dict[str, int] = field(default_factory=dict)


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.cache = MMItemCache(config.cache_bytes)
        self.counters = EngineCounters()
        self._process = psutil.Process()
        # One stream per fault, so that turning one on does not move the other's draws.
        self._evict_rng = np.random.default_rng([config.seed, 1])
        self._error_rng = np.random.default_rng([config.seed, 2])
        # Called once, after the restart_every-th request has been answered.
        self.on_quota: Callable[[], None] | None = None
        self._media_dir = Path(config.allowed_media_dir).resolve() if config.allowed_media_dir else None
        self._answers = 0  # completions answered: numbers the request_id
        # CPU seconds are counted from here: imports and start-up are not the engine's work.
        self._cpu0 = time.process_time()
        self._t0 = time.monotonic()

    def _count(self, status: int) -> None:
        key = str(status)
        self.counters.status_counts[key] = self.counters.status_counts.get(key, 0) + 1
        if status >= 400:
            self.counters.errors += 1
        else:
            self.counters.ok += 1

    async def _read_body(self, request: Request) -> bytes | bytearray | Response:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return _error(413, f"body of {declared} bytes exceeds the engine's max body {limit}")
            except ValueError:
                return _error(400, "content-length is not an integer")
            if int(declared) >= 0:
                return await self._read_into(request, int(declared))
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            self.counters.bytes_received += len(chunk)
            if size > limit:
                return _error(413, f"body exceeds the engine's max body {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_into(self, request: Request, declared: int) -> bytearray | Response:
        """A body of known length, copied chunk by chunk into one buffer as it arrives: one copy
        of the body, where keeping the chunks and joining them would hold two at once."""
        buf = bytearray(declared)
        size = 0
        with memoryview(buf) as view:
            async for chunk in request.stream():
                end = size + len(chunk)
                self.counters.bytes_received += len(chunk)
                if end > declared:  # the server frames bodies by their length: not expected
                    return _error(400, f"body is longer than its content-length {declared}")
                view[size:end] = chunk
                size = end
        del buf[size:]  # a body cut short (the client went away): what arrived, as before
        return buf

    def _resolve(
        self, mm_hash: str, kw: bytes | None, placeholder_len: int, single_placeholder: bool = False
    ) -> DecodedItem | Response:
        if kw is None:
            self.counters.items_null += 1
            cached = self.cache.get(mm_hash)
            if cached is None:
                # as vLLM 0.32 answers it (its typed cache miss, #46747): a retryable 500, and the
                # engine keeps serving; a router retries it on another pick, the client resends the item
                return _error(500, f"{MISSING_ITEM} {mm_hash} ({MISSING_ITEM_HINT})")
            return cached
        self.counters.items_full += 1
        try:
            item = decode_item(kw)
        except CodecError as exc:
            return _error(400, f"item for mm_hash {mm_hash}: {exc}")
        _, gh, gw = (int(x) for x in item.image_grid_thw[0])
        # Qwen-VL prompts hold every image token; Kimi's one <|media_pad|> per image, which the
        # engine expands (as vLLM's Kimi K2.5 processor does)
        expected = 1 if single_placeholder else gh * gw // MERGE_TOKENS
        if gh * gw != item.pixel_values.shape[0] or gh * gw % MERGE_TOKENS or placeholder_len != expected:
            return _error(
                400,
                f"item for mm_hash {mm_hash}: grid {gh}x{gw}, {item.pixel_values.shape[0]} pixel rows "
                f"and {placeholder_len} placeholder tokens disagree",
            )
        self.cache.put(mm_hash, item)
        return item

    def _evict_at_random(self) -> None:
        """The evict fault: every cached item is dropped with probability evict_rate."""
        rate = self.config.evict_rate
        keys = self.cache.keys()
        if rate <= 0 or not keys:
            return
        for mm_hash, draw in zip(keys, self._evict_rng.random(len(keys)), strict=True):
            if draw < rate and self.cache.drop(mm_hash):
                self.counters.injected_evictions += 1

    def _inject_error(self) -> bool:
        rate = self.config.error_rate
        return rate > 0 and bool(self._error_rng.random() < rate)

    async def generate(self, request: Request) -> Response:
        c = self.counters
        c.requests += 1
        number = c.requests
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        logged = _Logged(time.monotonic() - self._t0)
        try:
            response = await self._generate(request, logged)
        except Exception as exc:  # a bug, not bad input: answered, counted, and the engine stays up
            response = _error(500, f"engine error: {type(exc).__name__}: {exc}")
        finally:
            c.in_flight -= 1
        self._count(response.status_code)
        if self.config.request_log is not None:
            self._log(number, logged, response.status_code)
        if number == self.config.restart_every and self.on_quota is not None:
            response.background = BackgroundTask(self.on_quota)  # runs once the answer is sent
        return response

    def _log(self, number: int, logged: _Logged, status: int) -> None:
        """One line of the request log: the order and timing of requests as the engine saw them,
        which the client cannot see (how mmbench's driver model was checked)."""
        line = {
            "request": number, "arrived_s": round(logged.arrived, 6),
            "read_s": None if logged.read is None else round(logged.read, 6),
            "answered_s": round(time.monotonic() - self._t0, 6), "status": status,
            "hashes": logged.hashes, "null_slots": logged.null_slots, "media": logged.media,
        }  # fmt: skip
        assert self.config.request_log is not None
        with open(self.config.request_log, "ab") as f:
            f.write(orjson.dumps(line) + b"\n")

    async def _generate(self, request: Request, logged: _Logged) -> Response:
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        logged.read = time.monotonic() - self._t0
        if self.config.delay_ms > 0:
            await asyncio.sleep(self.config.delay_ms / 1000)
        if self._inject_error():
            self.counters.injected_errors += 1
            return _error(500, f"injected fault: engine_error_rate {self.config.error_rate}")
        self._evict_at_random()
        try:
            req = parse_request(body)
        except WireError as exc:
            return _error(400, str(exc))
        del body
        logged.hashes = [h[:16] for h in req.hashes]
        logged.null_slots = sum(kw is None for kw in req.kwargs)
        logged.media = len(req.media)
        if req.media:
            return self._generate_raw(req)
        checksums: list[int] = []
        geometry = MODELS.get(req.model)
        single = geometry is not None and geometry.single_placeholder
        for mm_hash, kw, (_, length) in zip(req.hashes, req.kwargs, req.placeholders, strict=True):
            item = self._resolve(mm_hash, kw, length, single)
            if isinstance(item, Response):
                return item
            checksums.append(item.checksum)
        return _json(self._completion(req.token_ids, checksums))

    def _completion(self, prompt: list[int], checksums: list[int]) -> dict[str, object]:
        """A deterministic small completion (the tokens depend on the prompt, as a model's would)
        and the checksum of every item's pixels as the engine resolved them."""
        seed = zlib.crc32(np.asarray(prompt[-64:], dtype=np.int64).tobytes()) ^ self.config.seed
        rng = np.random.default_rng(seed)
        n = self.config.completion_tokens
        token_ids = rng.integers(0, 150_000, size=n).tolist()
        logprobs = np.round(-rng.exponential(1.0, size=n), 4).tolist()
        self._answers += 1
        entries = [{"token": f"token_id:{t}", "logprob": p} for t, p in zip(token_ids, logprobs, strict=True)]
        return {
            "token_ids": token_ids,
            "logprobs": logprobs,
            "item_checksums": checksums,
            # vLLM's shape of the same completion, which the renderers library's client reads
            "request_id": f"mmbench-{os.getpid()}-{self._answers}",
            "choices": [
                {
                    "index": 0,
                    "token_ids": token_ids,
                    "logprobs": {"content": entries},
                    "finish_reason": "length",
                }
            ],
        }

    def _resolve_media(self, url: str, geometry: Geometry) -> DecodedItem:
        """Load, decode and hash one image; its processed item from the cache, or preprocessed."""
        source = load_media(url, self._media_dir, self.config.max_body_bytes)
        self.counters.media_bytes += len(source)
        try:
            with Image.open(io.BytesIO(source)) as probe:  # the header only: refuse absurd sizes unread
                validate_source_size(*probe.size)
            image = decode_image(source)
        except MmbenchError as exc:
            raise MediaError(400, f"image refused: {exc}") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise MediaError(400, f"media is not a decodable image ({type(exc).__name__})") from None
        mm_hash = image_hash(image)
        cached = self.cache.get(mm_hash)
        if cached is not None:
            return cached
        self.counters.preprocess_calls += 1
        pixels, grid = process_image(image, geometry, self.config.dtype)
        item = DecodedItem(pixels, self.config.dtype, grid, pixel_checksum(pixels))
        self.cache.put(mm_hash, item)
        return item

    def _generate_raw(self, req: GenerateRequest) -> Response:
        geometry = MODELS.get(req.model)
        if geometry is None:
            return _error(404, f"the model {req.model[:80]!r} does not exist; serving: {', '.join(MODELS)}")
        items: list[DecodedItem] = []
        for i, url in enumerate(req.media):
            try:
                items.append(self._resolve_media(url, geometry))
            except MediaError as exc:
                return _error(exc.status, f"content_parts[{i}]: {exc}")
        # Each <|image_pad|> becomes the image's tokens (grid_h * grid_w / merge^2), as vLLM expands it.
        prompt: list[int] = []
        placeholders: list[dict[str, int]] = []
        images = iter(items)
        for token in req.token_ids:
            if token != IMAGE_PAD_TOKEN:
                prompt.append(token)
                continue
            _, gh, gw = (int(x) for x in next(images).image_grid_thw[0])
            n = gh * gw // MERGE_TOKENS
            placeholders.append({"offset": len(prompt), "length": n})
            prompt.extend([IMAGE_PAD_TOKEN] * n)
        answer = self._completion(prompt, [item.checksum for item in items])
        answer["mm_placeholders"] = {MODALITY: placeholders}
        if req.return_token_ids:
            answer["prompt_token_ids"] = prompt
        return _json(answer)

    def stats(self) -> EngineStats:
        mem = self._process.memory_info()
        c = self.counters
        return EngineStats(
            pid=os.getpid(),
            requests=c.requests,
            ok=c.ok,
            errors=c.errors,
            status_counts=dict(c.status_counts),
            bytes_received=c.bytes_received,
            items_full=c.items_full,
            items_null=c.items_null,
            cache_capacity_bytes=self.cache.capacity_bytes,
            cache_bytes=self.cache.nbytes,
            cache_items=len(self.cache),
            cache_hits=self.cache.stats.hits,
            cache_misses=self.cache.stats.misses,
            cache_evictions=self.cache.stats.evictions,
            injected_errors=c.injected_errors,
            injected_evictions=c.injected_evictions,
            max_in_flight=c.max_in_flight,
            preprocess_calls=c.preprocess_calls,
            media_bytes=c.media_bytes,
            cpu_s=round(time.process_time() - self._cpu0, 4),
            rss_bytes=mem.rss,
        )


def create_app(config: EngineConfig) -> Starlette:
    engine = Engine(config)

    async def generate(request: Request) -> Response:
        return await engine.generate(request)

    async def stats(request: Request) -> Response:
        if request.query_params.get("trim") == "1":
            # What the engine's live data occupies: freed request buffers returned first, as the
            # client's trimmed reading does (the engine serves on one thread: the main arena).
            # The RSS before the trim comes along, so that the end of a point is one request.
            untrimmed = engine.stats().rss_bytes
            gc.collect()
            malloc_trim()
            stats = replace(engine.stats(), rss_untrimmed_bytes=untrimmed)
        else:
            stats = engine.stats()
        if request.query_params.get("keys") == "1":  # which items it holds (a fleet's duplication)
            stats = replace(stats, cache_sizes=engine.cache.sizes())
        return Response(stats.encode(), media_type="application/json")

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def models(request: Request) -> Response:
        # vLLM's model list, which the renderers client reads for max_model_len before a processed
        # request: every geometry preset is served; no context bound but the body limit
        cards = [{"id": name, "object": "model", "max_model_len": MAX_MODEL_LEN} for name in MODELS]
        return _json({"object": "list", "data": cards})

    app = Starlette(
        routes=[
            Route(GENERATE_PATH, generate, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
    app.state.engine = engine
    return app
