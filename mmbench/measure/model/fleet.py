"""The model of a fleet: R replicas behind a router, each with its own cache. What the router's
policy does to a rollout's null slots (hash-only), to raw media's preprocessing, and to the caches.

A Monte Carlo of the rollouts' requests through the router (TRIALS runs, seeded, averaged):
- the K rollouts' turns run in lockstep, and within a turn they reach the router in a random order
  (they are concurrent: which comes first changes from turn to turn);
- the policy picks a replica per attempt:
  - `consistent_hash` hashes the session id with the header, the body without it (which differs
    every turn, and between a turn and its resend in full): each key has its own order of replicas
    on the ring, and the first one whose circuit is closed serves it. A retry sends the same body:
    the same replica;
  - `sticky_least_loaded` with the header keeps a session where it started, on the replica with the
    fewest sessions (and moves it to the one with the fewest where its circuit opens); without it,
    every pick is the replica with the fewest requests in flight, retries included;
  - `round_robin` takes the next replica in arrival order; its retries take the counter where the
    concurrent requests left it, which is any replica (measured at R = 2: about two misses per first
    miss, where "the other replica" would make one);
  - `power_of_two` the less loaded of two random replicas; `random` any;
  - `cache_aware` matches a request's text parts against what each replica was sent: a raw-media
    request's content parts (each turn's extend the last turn's) keep its rollout in place, as sticky
    as a session (measured: 64 preprocessings of 64 images, balance 1.00); a processed request has
    none, and the policy falls back to the load, which spread hash-only's turns like a random pick
    (measured: as many fallbacks as round robin). So: sticky for raw media, `random` otherwise;
- a request with null slots misses where its replica lacks one of them; the replica answers 500.
  With the router's retries on, it makes up to ATTEMPTS attempts; when the last one fails the router
  answers with it, and the client resends the turn in full (the fallback) after the turn's other
  first requests (the 500 comes back, the body is built again); the replica that serves the resend
  caches it whole. A request without null slots whose attempts all fail is the client's to retry
  (retry_budget times, the same body), then its rollout fails;
- the circuit breaker (with the router's retries on): a replica that failed BREAKER times in a row
  is taken out of rotation for the rest of the point (60 s, longer than these points). A failure
  comes back at once and a success only once the replica has served the request. An embedded
  replica serves in about 0.1 s, within a failed request's retries (about 0.4 s of back-off): the
  turn's earlier successes land between two requests' failures, and a request's failures add to
  its replica's count only where that replica has served nothing yet in the turn. A vLLM on these
  CPUs serves in seconds, after the turn's failures: they all count up, and its successes reset the
  count at the turn's end (`slow`). Where every circuit is open, the router answers 503 itself and
  the rollouts fail;
- `kill_replica_at_turn` T: replica 1 dies as turn T begins: its cache is gone, every attempt on it
  fails (and counts to its circuit), and the rollouts it held move once its circuit opens. Without
  the breaker (retries off) it stays in rotation: the router's health check, which would take it
  out after some seconds, is not modelled;
- a replica caches every item it serves in full (the cache is taken to hold the working set) and,
  raw media, preprocesses each image it has not seen.
Not modelled: time beyond the turn's order (which requests are in flight together), the breaker's
half-open probes after 60 s, and the router's health checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmbench.config import PointConfig
from mmbench.facts import facts_of

TRIALS = 64  # runs at K <= 8
# vllm-router 0.1.17's --retry-max-retries default, 5, counts attempts: the first and 4 retries
# (measured: its retry_backoff_duration_seconds_count has attempts 1 to 4, never a fifth)
ATTEMPTS = 5
BREAKER = 10  # its --cb-failure-threshold: consecutive failures that open a worker's circuit
STICKY = ("consistent_hash", "sticky_least_loaded")

OK, MISS, DOWN = "ok", "miss", "down"  # an attempt's outcome: served, a null slot lacked, no answer


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """Expected counts over the run, summed over replicas."""

    misses: float  # attempts a replica answered 500 for a null slot it lacks (router retries included)
    first_misses: float  # client requests whose first replica lacked an item (before retries)
    fallbacks: float  # client resends in full (the router's answer to a request with null slots failed)
    router_retries: float
    client_retries: float  # the client's retries of a request without null slots the router failed
    failed_rollouts: float  # rollouts that gave up (retry_budget spent: a dead replica, every circuit open)
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


class _Trial:
    def __init__(self, config: PointConfig, rng: np.random.Generator, slow: bool) -> None:
        self.c = config
        self.slow = slow  # successes land after the turn's failures (a vLLM replica: see above)
        self.r = config.replicas
        self.rng = rng
        self.rr = 0
        self.home: dict[int, int] = {}  # a session's replica (sticky policies)
        self.rings: dict[object, list[int]] = {}  # consistent_hash: each key's order of replicas
        self.sessions = [0] * self.r
        self.cached: list[set[int]] = [set() for _ in range(self.r)]
        self.inflight = [0] * self.r  # requests a replica is serving in this turn
        self.dead: set[int] = set()
        self.misses = self.first_misses = self.fallbacks = self.retries = self.preprocess = 0
        self.client_retries = self.failed = 0
        self.shapes: dict[tuple[int, int, int], int] = {}
        # the circuit breaker (with the router's retries on): consecutive failures per replica, the
        # replicas that served in this turn (their count resets at its end), and the open circuits
        self.failures = [0] * self.r
        self.served: set[int] = set()
        self.open = [False] * self.r

    # --- the router -------------------------------------------------------------------------

    def _up(self) -> list[int]:
        return [i for i in range(self.r) if not self.open[i]]

    def _least(self, among: list[int], load: list[int]) -> int:
        low = min(load[i] for i in among)
        ties = [i for i in among if load[i] == low]
        return ties[int(self.rng.integers(len(ties)))]

    def _ring(self, key: object, up: list[int]) -> int:
        order = self.rings.setdefault(key, [int(i) for i in self.rng.permutation(self.r)])
        return next(i for i in order if i in up)

    def pick(self, rollout: int, body: object, attempt: int) -> int | None:
        """The replica for one attempt (None: every circuit is open, the router answers 503)."""
        c, up = self.c, self._up()
        if not up:
            return None
        policy = c.router_policy
        if policy == "consistent_hash":
            return self._ring(rollout if c.session_header == "on" else body, up)
        if sticky(c):  # sticky_least_loaded with the header, cache_aware for raw media
            home = self.home.get(rollout)
            if home is None or self.open[home]:
                if home is not None:
                    self.sessions[home] -= 1
                home = self.home[rollout] = min(up, key=lambda i: (self.sessions[i], i))
                self.sessions[home] += 1
            return home
        if policy == "sticky_least_loaded":  # no session id: the fewest requests in flight
            return self._least(up, self.inflight)
        if policy == "round_robin" and attempt == 0:
            self.rr += 1
            return up[(self.rr - 1) % len(up)]
        if policy == "power_of_two" and len(up) > 1:
            two = [up[int(i)] for i in self.rng.choice(len(up), 2, replace=False)]
            return self._least(two, self.inflight)
        return up[int(self.rng.integers(len(up)))]

    def _attempt(self, where: int, items: list[int], new: int, null_slots: bool, chain: set[int]) -> str:
        if where in self.dead:
            outcome = DOWN
        elif null_slots and not set(items[: len(items) - new]) <= self.cached[where]:
            outcome = MISS
            self.misses += 1
        else:
            if not null_slots:
                self.preprocess += sum(i not in self.cached[where] for i in items)
            self.cached[where].update(items)
            self.inflight[where] += 1
            self.served.add(where)
            return OK
        if where not in chain:  # this request's first failure here: the turn's successes landed before it
            chain.add(where)
            if where in self.served and not self.slow:
                self.failures[where] = 0
        self.failures[where] += 1
        if self.c.router_retries == "on" and self.failures[where] >= BREAKER:
            self.open[where] = True
        return outcome

    def route(self, rollout: int, body: object, items: list[int], new: int, null_slots: bool) -> str:
        """One request through the router: its attempts, and the outcome it answers with."""
        attempts = ATTEMPTS if self.c.router_retries == "on" else 1
        outcome, chain = DOWN, set[int]()
        for attempt in range(attempts):
            where = self.pick(rollout, body, attempt)
            if where is None:  # no available worker: its attempts fail at once (503), retries counted
                self.retries += attempts - 1 - attempt
                return DOWN
            if attempt:
                self.retries += 1
            outcome = self._attempt(where, items, new, null_slots, chain)
            self.first_misses += attempt == 0 and outcome == MISS
            if outcome == OK:
                break
        return outcome

    # --- the client -------------------------------------------------------------------------

    def send(self, rollout: int, body: object, items: list[int], new: int, null_slots: bool) -> str:
        """The client's request: OK; MISS where a request with null slots failed (it is resent in
        full); DOWN where one without them failed retry_budget times over (the rollout fails)."""
        outcome = self.route(rollout, body, items, new, null_slots)
        if outcome == OK:
            return OK
        if null_slots:
            return MISS
        for _ in range(self.c.retry_budget):
            self.client_retries += 1
            if self.route(rollout, body, items, new, null_slots) == OK:
                return OK
        self.failed += 1
        return DOWN

    def resend(self, rollout: int, turn: int, items: list[int]) -> bool:
        """The client's resend in full: a new body, routed again."""
        self.fallbacks += 1
        shape = (turn, len(items), len(items))
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        return self.send(rollout, ("full", rollout, turn), items, len(items), False) == OK

    def kill(self, replica: int) -> None:
        self.dead.add(replica)
        self.cached[replica].clear()

    def end_turn(self) -> None:
        for where in self.served:
            self.failures[where] = 0
        self.served.clear()
        self.inflight = [0] * self.r


def fleet_counts(config: PointConfig, trials: int | None = None, slow: bool = False) -> FleetCounts:
    """The fleet's expected counts for a point with replicas >= 1: the mean of `trials` runs (TRIALS
    at K <= 8, fewer above, as a run of many rollouts averages over them itself: 4 at K = 256).
    `slow`: replicas whose successes land after a turn's failures (vLLM; see the module)."""
    f = facts_of(config)
    k, n, m = config.rollouts, config.turns, config.images_per_turn
    trials = trials or max(4, TRIALS * 8 // max(8, k))
    null_slots = f.mode.renders and f.mode.needs_engine_cache
    raw = not f.mode.renders
    totals = np.zeros(8)
    shapes: dict[tuple[int, int, int], float] = {}
    for trial in range(trials):
        rng = np.random.default_rng([config.seed, trial, 30])
        t = _Trial(config, rng, slow)
        alive = set(range(k))
        for turn in range(1, n + 1):
            if turn == config.kill_replica_at_turn:
                t.kill(0)
            resends = []
            for rollout in (int(i) for i in rng.permutation(k)):
                if rollout not in alive:
                    continue
                ids = [rollout * n * m + j for j in range(turn * m)]
                outcome = t.send(rollout, (rollout, turn), ids, m, null_slots and turn > 1)
                if outcome == MISS:
                    resends.append((rollout, ids))
                elif outcome == DOWN:
                    alive.discard(rollout)
            # a resend follows its 500 and a new build: after the turn's other first requests
            for i in rng.permutation(len(resends)):
                rollout, ids = resends[i]
                if not t.resend(rollout, turn, ids):
                    alive.discard(rollout)
            t.end_turn()
        cached = sum(len(s) for s in t.cached)
        totals += (
            t.misses, t.first_misses, t.fallbacks, t.retries, t.client_retries, t.failed,
            t.preprocess if raw else 0, cached,
        )  # fmt: skip
        for shape, count in t.shapes.items():
            shapes[shape] = shapes.get(shape, 0.0) + count / trials
    mean = totals / trials
    return FleetCounts(
        misses=float(mean[0]), first_misses=float(mean[1]), fallbacks=float(mean[2]),
        router_retries=float(mean[3]), client_retries=float(mean[4]), failed_rollouts=float(mean[5]),
        preprocess_calls=float(mean[6]), cached_items=float(mean[7]),
        unique_items=k * n * m, resend_shapes=tuple(sorted(shapes.items())),
    )  # fmt: skip
