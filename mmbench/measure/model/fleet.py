"""The model of a fleet: R replicas behind a router, each with its own cache. What the router's
policy does to a rollout's null slots (hash-only), to raw media's preprocessing, and to the caches.

A Monte Carlo of the rollouts' requests through the router (TRIALS runs, seeded, averaged):
- the K rollouts' turns run in lockstep, and within a turn they reach the router in a random order
  (they are concurrent: which comes first changes from turn to turn);
- the policy picks a replica per request: `consistent_hash` and `sticky_least_loaded` with the
  session header keep a rollout on one replica (consistent_hash: the hash ring's pick, uniform;
  sticky_least_loaded: the replica with fewest sessions); `round_robin` takes the next replica in
  arrival order; `random`, `power_of_two`, `cache_aware` and either sticky policy without a session
  id pick any replica (consistent_hash hashes the body, which differs every turn);
- a request with null slots misses where its replica lacks one of them; the replica answers 500.
  With the router's retries on, it tries again up to RETRIES times, re-picking (a sticky pick
  picks the same replica again); when every attempt misses, the client resends the turn in full
  (the fallback) after the turn's other first requests (the 500 comes back, the body is built
  again), and the router routes it again: the replica that serves it caches it whole;
- with the retries on, the circuit breaker too: a replica whose answers fail 10 times in a row is
  taken out of rotation for the rest of the point (60 s, longer than these points), and its sessions
  move to another replica (whose cache lacks their items);
- `cache_aware` matches a request's text parts against what each replica was sent: a raw-media
  request's content parts (each turn's extend the last turn's) keep its rollout in place, as sticky
  as a session (measured: 64 preprocessings of 64 images, balance 1.00); a processed request has
  none, and the policy falls back to the load, which spreads a rollout's turns like a random pick
  (measured: as many fallbacks as round robin). So: sticky for raw media, `random` otherwise;
- a replica caches every item it serves in full (the cache is taken to hold the working set) and,
  raw media, preprocesses each image it has not seen.
Not modelled: time (a request's latency: which requests are in flight together), a replica killed
mid-point, and the breaker's half-open probes after 60 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmbench.config import PointConfig
from mmbench.facts import facts_of

TRIALS = 64
RETRIES = 5  # vllm-router 0.1.17's --retry-max-retries default
BREAKER = 10  # its --cb-failure-threshold: consecutive failures that open a worker's circuit
STICKY = ("consistent_hash", "sticky_least_loaded")


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Expected counts over the run, summed over replicas."""

    misses: float  # attempts a replica answered 500 for a null slot it lacks (router retries included)
    first_misses: float  # client requests whose first replica lacked an item (before retries)
    fallbacks: float  # client resends in full (every attempt missed)
    router_retries: float
    preprocess_calls: float  # raw media: images preprocessed, over replicas
    cached_items: float  # items cached, over replicas (each replica counts its own copy)
    unique_items: int
    # (turn, items, full) -> expected count of the client's fallback resends
    resend_shapes: tuple[tuple[tuple[int, int, int], float], ...]


def sticky(config: PointConfig) -> bool:
    """Whether the point's policy keeps a rollout on one replica."""
    if config.router_policy == "cache_aware":
        return not facts_of(config).mode.renders  # raw media: its content parts match (see above)
    return config.router_policy in STICKY and config.session_header == "on"


def _pick_again(config: PointConfig) -> bool:
    """Whether the router's retry re-picks (False: the same replica again): consistent_hash hashes
    the same header or the same body again, a sticky policy keeps the session where it is."""
    return config.router_policy != "consistent_hash" and not sticky(config)


class _Trial:
    def __init__(self, config: PointConfig, rng: np.random.Generator) -> None:
        self.c = config
        self.r = config.replicas
        self.rng = rng
        self.rr = 0
        self.home: dict[int, int] = {}
        self.sessions = [0] * self.r
        self.cached: list[set[int]] = [set() for _ in range(self.r)]
        self.misses = self.first_misses = self.fallbacks = self.retries = self.preprocess = 0
        self.shapes: dict[tuple[int, int, int], int] = {}
        # the circuit breaker (with the router's retries on): consecutive failures per replica, and
        # the replicas whose circuit opened (for the rest of the point: it stays open 60 s)
        self.failures = [0] * self.r
        self.open = [False] * self.r

    def _up(self) -> list[int]:
        up = [i for i in range(self.r) if not self.open[i]]
        return up or list(range(self.r))  # every circuit open: the model lets them all serve

    def _failed(self, where: int) -> None:
        self.failures[where] += 1
        if self.c.router_retries == "on" and self.failures[where] >= BREAKER:
            self.open[where] = True

    def pick(self, rollout: int) -> int:
        c, up = self.c, self._up()
        if sticky(c):
            if rollout not in self.home or self.open[self.home[rollout]]:  # new, or its circuit opened
                if c.router_policy == "consistent_hash":
                    self.home[rollout] = up[int(self.rng.integers(len(up)))]
                else:  # fewest sessions, ties to the first
                    self.home[rollout] = min(up, key=lambda i: (self.sessions[i], i))
                self.sessions[self.home[rollout]] += 1
            return self.home[rollout]
        if c.router_policy == "round_robin":
            self.rr += 1
            return up[(self.rr - 1) % len(up)]
        return up[int(self.rng.integers(len(up)))]

    def request(self, rollout: int, turn: int, items: list[int], new: int, null_slots: bool) -> bool:
        """One turn's request: `items` every image of the prompt, the last `new` of them new. False
        where every attempt missed: the client resends it in full (`resend`), later in the turn."""
        where = self.pick(rollout)
        if null_slots:
            old = set(items[: len(items) - new])
            attempts = 0
            while not old <= self.cached[where]:
                self._failed(where)
                self.misses += 1
                self.first_misses += attempts == 0
                attempts += 1
                if self.c.router_retries == "off" or attempts > RETRIES:
                    self.fallbacks += 1
                    return False
                self.retries += 1
                if _pick_again(self.c):
                    where = self.pick(rollout)
            self.failures[where] = 0  # consecutive failures: a success closes the count
            self.cached[where].update(items[len(items) - new :])
            return True
        fresh = [i for i in items if i not in self.cached[where]]
        self.preprocess += len(fresh)
        self.cached[where].update(items)
        return True

    def resend(self, rollout: int, turn: int, items: list[int]) -> None:
        """The client's resend in full: a new body, routed again (a sticky session stays), served."""
        shape = (turn, len(items), len(items))
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        where = self.pick(rollout)
        self.failures[where] = 0
        self.cached[where].update(items)


def fleet_counts(config: PointConfig, trials: int = TRIALS) -> FleetCounts:
    """The fleet's expected counts for a point with replicas >= 1."""
    f = facts_of(config)
    k, n, m = config.rollouts, config.turns, config.images_per_turn
    null_slots = f.mode.renders and f.mode.needs_engine_cache
    raw = not f.mode.renders
    totals = np.zeros(6)
    shapes: dict[tuple[int, int, int], float] = {}
    for trial in range(trials):
        rng = np.random.default_rng([config.seed, trial, 30])
        t = _Trial(config, rng)
        for turn in range(1, n + 1):
            resends = []
            for rollout in rng.permutation(k):
                ids = [int(rollout) * n * m + j for j in range(turn * m)]
                if not t.request(int(rollout), turn, ids, m, null_slots and turn > 1):
                    resends.append((int(rollout), ids))
            # a resend follows its 500 and a new build: after the turn's other first requests
            for i in rng.permutation(len(resends)):
                t.resend(resends[i][0], turn, resends[i][1])
        cached = sum(len(s) for s in t.cached)
        totals += (t.misses, t.first_misses, t.fallbacks, t.retries, t.preprocess if raw else 0, cached)
        for shape, count in t.shapes.items():
            shapes[shape] = shapes.get(shape, 0.0) + count / trials
    mean = totals / trials
    return FleetCounts(
        misses=float(mean[0]), first_misses=float(mean[1]), fallbacks=float(mean[2]),
        router_retries=float(mean[3]), preprocess_calls=float(mean[4]), cached_items=float(mean[5]),
        unique_items=k * n * m, resend_shapes=tuple(sorted(shapes.items())),
    )  # fmt: skip
