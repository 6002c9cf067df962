"""An engine mmbench did not start (`--engine-url`): a vLLM deployment, or `mmbench engine`.

It is reached over HTTP only: nothing is read from its process (/proc, signals), and it is never
started, restarted or stopped here. What mmbench knows of it is what it answers: `GET /v1/models`
(vLLM's model list: ids and `max_model_len`), and, where it is mmbench's own engine, `GET /stats`
(its counters, cache and RSS). A vLLM answers no /stats, so every engine-side figure of a point is
then unknown (None), never 0.

It has the interface of EngineProcess that the harness uses (url, pid, restarts, stats, alive, a
context manager), so one measuring path serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from mmbench.errors import MmbenchError
from mmbench.world.engine.stats import EngineStats

MODELS_PATH = "/v1/models"
STATS_PATH = "/stats"
TIMEOUT_S = 10.0
EMBEDDED = "embedded"  # what a record's `engine` says when mmbench started the engine itself


def normalize_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash; a one-line error otherwise."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise MmbenchError(f"--engine-url {url!r} is not an http(s)://HOST[:PORT] address")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise MmbenchError(f"--engine-url {url!r} has a bad port") from None
    return text


def _client() -> httpx.Client:
    # The harness's own few requests: no proxy from the environment, nothing kept between points.
    return httpx.Client(trust_env=False, timeout=TIMEOUT_S, limits=httpx.Limits(max_keepalive_connections=0))


@dataclass(frozen=True, slots=True)
class EngineInfo:
    url: str
    max_model_len: dict[str, int | None]  # served model id -> its context length (None: not said)
    has_stats: bool  # answers mmbench's GET /stats (mmbench engine), so engine figures are known


def probe(url: str) -> EngineInfo:
    """Ask the engine what it serves; a one-line error when it cannot be reached or does not
    answer as vLLM does."""
    url = normalize_url(url)
    with _client() as http:
        try:
            reply = http.get(url + MODELS_PATH)
        except httpx.HTTPError as exc:
            raise MmbenchError(
                f"the engine at {url} is not reachable ({type(exc).__name__}: {exc})"
            ) from None
        models: dict[str, int | None] | None = None
        try:
            if reply.status_code == 200:
                models = {str(c["id"]): _int_or_none(c.get("max_model_len")) for c in reply.json()["data"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            models = None
        if not models:
            raise MmbenchError(
                f"the engine at {url} does not list its models at GET {MODELS_PATH} as vLLM does "
                f"(HTTP {reply.status_code})"
            )
        return EngineInfo(url, models, _stats(http, url) is not None)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _stats(http: httpx.Client, url: str, trim: bool = False) -> EngineStats | None:
    """mmbench's engine stats, or None where the engine does not answer them (a vLLM)."""
    try:
        reply = http.get(url + STATS_PATH, params={"trim": "1"} if trim else None)
    except httpx.HTTPError:
        return None
    return EngineStats.decode(reply.content) if reply.status_code == 200 else None


class RemoteEngine:
    """The harness's handle on an engine it did not start."""

    pid: int | None = None  # not ours to read
    restarts: int | None = None  # unknown: it restarts (or not) on its own

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._http = _client()

    def stats(self, trim: bool = False) -> EngineStats | None:
        """Its counters now (summed since it started, not per point), or None where it has none."""
        return _stats(self._http, self.url, trim)

    failure: str | None = None  # not ours to diagnose
    flags: str | None = None  # not ours to know

    def pids(self) -> list[int]:
        return []  # not ours to read

    def reset_peaks(self) -> None:
        """Nothing: its memory is not read."""

    def hwm(self) -> int | None:
        return None

    def alive(self) -> bool:
        return True  # a request that finds it gone fails the rollout, which records why

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()
