"""What a rollout holds and counts: steps, the conversation, counters, and their totals."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from mmbench.world.sidecar import MultiModalData, Placeholder


class RolloutFailed(Exception):
    """A rollout that cannot complete; recorded with its cause, never raised past the driver."""


NO_SIDECAR = MultiModalData()  # what a raw-media step keeps of a sidecar: nothing (never mutated)


@dataclass(slots=True)
class Step:
    prompt_len: int
    completion_ids: list[int]
    logprobs: list[float]
    sidecar: MultiModalData  # as the transport stores it (raw media: empty)
    # raw media: where the engine put each image's tokens in the expanded prompt (its answer)
    placeholders: list[Placeholder] | None = None


@dataclass(slots=True)
class Conversation:
    """What the env worker holds for one rollout besides the steps.

    Processed modes keep every encoded source (`sources`); the raw-media modes keep every image as
    the URL the message carries (`media`: a data: URL inline, or a file:// reference) and the
    token stream as the client renders it (`rendered`, one `<|image_pad|>` per image). `tokens`
    is the stream with every image's tokens expanded, as training uses it, in every mode.
    """

    sources: list[bytes] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    tokens: array = field(default_factory=lambda: array("l"))
    rendered: array = field(default_factory=lambda: array("l"))


@dataclass(slots=True)
class RolloutCounters:
    requests: int = 0
    bytes_shipped: int = 0
    bytes_per_turn: list[int] = field(default_factory=list)
    full_items_sent: int = 0
    null_items_sent: int = 0
    media_items_sent: int = 0
    fallbacks: int = 0
    retries: int = 0  # requests sent again after a 5xx without null slots or a failed connection
    extra_bytes: int = 0  # bytes of resends and retries: beyond what the turns ship without faults
    wrong_results: int = 0
    unverified: int = 0  # items an engine without checksums (a vLLM) answered for: correctness unknown
    cache_hits: int = 0
    cache_misses: int = 0
    rederived: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per request, as the client sees it
    # raw media: (image index in the conversation, the engine's checksum), checked after the run
    media_checksums: list[tuple[int, int]] = field(default_factory=list)
    failed: bool = False
    failure: str | None = None
    fallback_error: str | None = None  # the engine's answer that made the first fallback


@dataclass(slots=True)
class Trajectory:
    rollout: int
    conversation: Conversation
    steps: list[Step]
    counters: RolloutCounters


SUM_FIELDS = (
    "requests", "bytes_shipped", "full_items_sent", "null_items_sent", "media_items_sent", "fallbacks",
    "wrong_results", "cache_hits", "cache_misses", "rederived", "retries", "extra_bytes", "unverified",
)  # fmt: skip


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linearly interpolated; None without values."""
    return float(np.percentile(values, q)) if values else None


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    bytes_shipped: int
    full_items_sent: int
    null_items_sent: int
    media_items_sent: int
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
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    unverified: int = 0  # items whose correctness no checksum could show (wrong_results is then unknown)
    fallback_error: str | None = None  # the engine's answer that made the first fallback of any rollout

    @classmethod
    def of(cls, trajectories: list[Trajectory]) -> Totals:
        sums = {k: sum(getattr(t.counters, k) for t in trajectories) for k in SUM_FIELDS}
        width = max((len(t.counters.bytes_per_turn) for t in trajectories), default=0)
        per_turn = [
            sum(t.counters.bytes_per_turn[i] for t in trajectories if i < len(t.counters.bytes_per_turn))
            for i in range(width)
        ]
        failures = [f"rollout {t.rollout}: {t.counters.failure}" for t in trajectories if t.counters.failed]
        latencies = [x for t in trajectories for x in t.counters.latencies]
        causes = [t.counters.fallback_error for t in trajectories if t.counters.fallback_error]
        return cls(
            **sums, failed_rollouts=len(failures), bytes_per_turn=per_turn, failures=failures,
            latency_p50_s=percentile(latencies, 50), latency_p95_s=percentile(latencies, 95),
            latency_max_s=max(latencies) if latencies else None, fallback_error=causes[0] if causes else None,
        )  # fmt: skip
