"""The engine's HTTP application (Starlette): decode items, resolve null slots, answer.

It does the real work the inference server's multimodal front end does for a request: parse
the JSON body, base64-decode and deserialize every full item, resolve every null slot from
the mm-hash cache (or fail with "Expected a cached item for mm_hash ..."), and return a small
completion plus a checksum of the pixels it resolved for each item, so the client can prove
that what the engine used is what it meant to send.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import orjson
import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mmbench.world.codec import CodecError, DecodedItem, decode_item
from mmbench.world.engine.cache import MMItemCache
from mmbench.world.wire import GENERATE_PATH, WireError, parse_request

MERGE_TOKENS = 4  # placeholder tokens per image = grid_h * grid_w / merge^2, merge 2 in both presets


@dataclass(frozen=True, slots=True)
class EngineConfig:
    cache_bytes: int = 4 * 1024**3
    max_body_bytes: int = 2 * 1024**3
    completion_tokens: int = 16
    seed: int = 0


@dataclass(slots=True)
class EngineCounters:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    bytes_received: int = 0
    items_full: int = 0
    items_null: int = 0
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

    def _count(self, status: int) -> None:
        key = str(status)
        self.counters.status_counts[key] = self.counters.status_counts.get(key, 0) + 1
        if status >= 400:
            self.counters.errors += 1
        else:
            self.counters.ok += 1

    async def _read_body(self, request: Request) -> bytes | Response:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return _error(413, f"body of {declared} bytes exceeds the engine's max body {limit}")
            except ValueError:
                return _error(400, "content-length is not an integer")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            self.counters.bytes_received += len(chunk)
            if size > limit:
                return _error(413, f"body exceeds the engine's max body {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _resolve(self, mm_hash: str, kw: bytes | None, placeholder_len: int) -> DecodedItem | Response:
        if kw is None:
            self.counters.items_null += 1
            cached = self.cache.get(mm_hash)
            if cached is None:
                return _error(400, f"Expected a cached item for mm_hash {mm_hash}")
            return cached
        self.counters.items_full += 1
        try:
            item = decode_item(kw)
        except CodecError as exc:
            return _error(400, f"item for mm_hash {mm_hash}: {exc}")
        _, gh, gw = (int(x) for x in item.image_grid_thw[0])
        if gh * gw != item.pixel_values.shape[0] or placeholder_len * MERGE_TOKENS != gh * gw:
            return _error(
                400,
                f"item for mm_hash {mm_hash}: grid {gh}x{gw}, {item.pixel_values.shape[0]} pixel rows "
                f"and {placeholder_len} placeholder tokens disagree",
            )
        self.cache.put(mm_hash, item)
        return item

    async def generate(self, request: Request) -> Response:
        self.counters.requests += 1
        try:
            response = await self._generate(request)
        except Exception as exc:  # a bug, not bad input: answered, counted, and the engine stays up
            response = _error(500, f"engine error: {type(exc).__name__}: {exc}")
        self._count(response.status_code)
        return response

    async def _generate(self, request: Request) -> Response:
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            req = parse_request(body)
        except WireError as exc:
            return _error(400, str(exc))
        del body
        checksums: list[int] = []
        for mm_hash, kw, (_, length) in zip(req.hashes, req.kwargs, req.placeholders, strict=True):
            item = self._resolve(mm_hash, kw, length)
            if isinstance(item, Response):
                return item
            checksums.append(item.checksum)
        # A deterministic small completion: the tokens depend on the prompt, as a model's would.
        seed = zlib.crc32(np.asarray(req.token_ids[-64:], dtype=np.int64).tobytes()) ^ self.config.seed
        rng = np.random.default_rng(seed)
        n = self.config.completion_tokens
        return _json(
            {
                "token_ids": rng.integers(0, 150_000, size=n).tolist(),
                "logprobs": np.round(-rng.exponential(1.0, size=n), 4).tolist(),
                "item_checksums": checksums,
            }
        )

    def stats(self) -> dict[str, object]:
        mem = self._process.memory_info()
        c = self.counters
        return {
            "requests": c.requests,
            "ok": c.ok,
            "errors": c.errors,
            "status_counts": dict(c.status_counts),
            "bytes_received": c.bytes_received,
            "items_full": c.items_full,
            "items_null": c.items_null,
            "cache_capacity_bytes": self.cache.capacity_bytes,
            "cache_bytes": self.cache.nbytes,
            "cache_items": len(self.cache),
            "cache_hits": self.cache.stats.hits,
            "cache_misses": self.cache.stats.misses,
            "cache_evictions": self.cache.stats.evictions,
            "rss_bytes": mem.rss,
        }


def create_app(config: EngineConfig) -> Starlette:
    engine = Engine(config)

    async def generate(request: Request) -> Response:
        return await engine.generate(request)

    async def stats(request: Request) -> Response:
        return _json(engine.stats())

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    app = Starlette(
        routes=[
            Route(GENERATE_PATH, generate, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.engine = engine
    return app
