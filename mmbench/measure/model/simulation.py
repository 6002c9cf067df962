"""The rollout driver, simulated in time: what the engine's cache serves and who renders what on
which renderer, in the order the driver produces. No pixels are made; only keys and CPU time move.

What each rollout does (mmbench.rollout.driver): K rollouts of N turns, m new images a turn, each
image a distinct key. A turn renders its new images through the pool, asks the mode which items
ship in full (null slots for the hashes already sent, in the modes that send them), re-derives
through the pool every full item whose pixels the previous step did not keep, builds the body and
posts it. After a success the step keeps the pixels of the items it shipped in full if the mode
stores pixels, none otherwise; after an error on a null slot ("Expected a cached item") the client
forgets the request's hashes and resends every item in full once, re-deriving what it lacks. The
next turn starts as soon as the answer is in.

Where the time goes, and so the order things happen in (a discrete-event simulation):
- The client is one CPU shared by everything it does at once (its threads take turns on the GIL:
  measured, its CPU seconds equal the rollouts' wall time): every render in progress and every body
  being built and uploaded gets an equal share of it (processor sharing).
- The renderer pool hands its renderers out first come, first served (the library's asyncio queue;
  a renderer goes to the back when returned), each with its own FIFO cache of `image_cache_max`
  entries that a hit does not reorder, so an image re-derived on a later turn lands on another
  renderer and sits in several caches at once. A render that misses costs more than a hit (a hit
  still decodes and hashes).
- The engine is another CPU and answers one request at a time in the order the bodies reach it:
  its cache is LRU by bytes with items all of one size (so LRU by a count); a full item is stored,
  a null slot is a lookup that refreshes its entry or fails the request, which stops there.

The costs (Timing) are CPU milliseconds measured at 512x512 and scale with the item's size; only
their ratios change the order. Why time matters, measured on scenarios/engine-cache.toml (K = 8,
caches of 8, 17 and 34 items; the engine's request log read back): hash-only resends need no
render and overtake the other rollouts' first attempts, which wait for the renderer, so a cache
smaller than the working set thrashes there (51-54, 25-34 and 5 fallbacks measured over up to eleven
runs; this model 53, 26 and 5); ephemeral+hash-only resends re-derive through the same renderer
and queue behind the others (40-43, 16-17, 4-5 measured; this model 40, 16 and 4), with the
per-turn pattern of each reproduced (hash-only at 8 items: 0, 6, 7, 8, 7, 8, 8, 8 measured, 0, 6,
7, 8, 8, 8, 8, 8 here). The queue-with-a-drift this replaced gave 38, 21 and 6 for both.
Renderer caches against image-cache.toml and pools of 1, 4 and 16: see docs/model.md.

Small random variations of every cost (a few per cent) stand for the machine's noise; they come
from fixed seeds and the counts are averaged over a few runs, so that a prediction is
deterministic; large points run once, their averages being stable already.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

from mmbench.facts import Mode

# Runs averaged per prediction: enough that the seeds' spread is well under the model's error,
# with at most about this many renders and request items simulated in all (a few 0.1 s).
_RUNS_MAX = 8
_WORK_BUDGET = 30_000
# Each cost varies by up to this share either way, at random (the machine's noise).
_COST_NOISE = 0.1


@dataclass(frozen=True, slots=True)
class Timing:
    """CPU milliseconds of the client's and the engine's work for one point's item size."""

    render_miss: float  # decode, hash and preprocess one image
    render_hit: float  # decode and hash one image the renderer has cached
    build_item: float  # one item's share of a body: copy, encode, JSON, upload
    build_fixed: float  # a body's fixed share (tokens, JSON, the answer)
    engine_item: float  # the engine's read and parse of one full item
    engine_decode: float  # its decode of one full item (not done for the items after a miss)
    engine_fixed: float  # the engine's fixed cost of a request


@dataclass(frozen=True, slots=True)
class DriverCounts:
    """Expected counts of one point, over the whole run (all rollouts)."""

    renders: float
    renderer_cache_hits: float
    renderer_cache_misses: float
    rederived: float  # renders of pixels a step did not keep (both hits and misses)
    renderer_cache_entries: float  # entries in all the pool's caches at the end
    rederived_kept: float  # re-derived pixels made anew (misses) that a step then keeps
    engine_cache_hits: float
    engine_cache_misses: float
    engine_cache_items: float  # items in the engine's cache at the end
    fallbacks: float
    requests: float
    full_items_sent: float
    null_items_sent: float
    #: (turn 1..N, items in the request, items in full) -> expected number of such requests
    request_shapes: tuple[tuple[tuple[int, int, int], float], ...]


@dataclass(slots=True)
class _Engine:
    capacity: int  # items
    lru: OrderedDict[int, None]
    hits: int = 0
    misses: int = 0

    def serve(self, keys: list[int], mask: list[bool]) -> bool:
        """One request's items in order: store the full ones, look the null ones up; False at the
        first null slot not cached (the engine stops there)."""
        lru = self.lru
        for key, full in zip(keys, mask, strict=True):
            if full:
                if self.capacity:
                    lru.pop(key, None)
                    lru[key] = None
                    if len(lru) > self.capacity:
                        lru.popitem(last=False)
            elif key in lru:
                lru.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
                return False
        return True


@dataclass(frozen=True, slots=True)
class SimPoint:
    """What the simulation of one point depends on, and nothing else: points that differ elsewhere
    (image format, seed, ...) share one simulation (the key of its cache)."""

    mode: Mode
    k: int
    n: int
    m: int
    pool_size: int
    cache_max: int
    engine_items: int  # how many items the engine's cache holds
    sent_max: int
    timing: Timing  # what the client's and the engine's work costs at this point's item size
    build_gate: int = 0  # max_inflight_builds: builds at once (0: no cap)


class _SharedCpu:
    """Processor sharing: every job in progress gets an equal share of one CPU. Kept in virtual
    time (the service each job has had so far), so each event is O(log jobs)."""

    def __init__(self) -> None:
        self.virtual = 0.0
        self.jobs: list[tuple[float, int, Callable[[], None]]] = []  # (virtual finish, seq, done)
        self.seq = 0

    def add(self, work: float, done: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.jobs, (self.virtual + work, self.seq, done))

    def next_in(self) -> float:
        """Real time until the next job finishes (inf when idle)."""
        return (self.jobs[0][0] - self.virtual) * len(self.jobs) if self.jobs else float("inf")

    def advance(self, dt: float) -> None:
        if self.jobs:
            self.virtual += dt / len(self.jobs)

    def pop_done(self) -> Callable[[], None]:
        return heapq.heappop(self.jobs)[2]


@dataclass(slots=True)
class _Rollout:
    turn: int = 0
    resend: bool = False
    kept: list[bool] = field(default_factory=list)  # pixels the last step kept, per item
    keys: list[int] = field(default_factory=list)  # the request in progress
    mask: list[bool] = field(default_factory=list)  # its items in full
    pixels: list[bool] = field(default_factory=list)  # its items with pixels once rendered
    todo: deque[tuple[int, bool]] = field(default_factory=deque)  # renders before the build: (key, again)


class _Run:
    """One simulated run of a point (see the module doc)."""

    def __init__(self, p: SimPoint, rng: random.Random) -> None:
        self.p, self.rng = p, rng
        self.client = _SharedCpu()
        self.engine = _Engine(p.engine_items, OrderedDict())
        self.engine_queue: deque[int] = deque()
        self.engine_done_at = float("inf")  # when the request at the head of the queue is answered
        self.served = False  # whether that request's null slots were all cached
        self.now = 0.0
        self.sent: OrderedDict[int, None] = OrderedDict()  # hash-only's sent hashes, an LRU
        self.caches: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(p.pool_size)]
        self.free: deque[int] = deque(range(p.pool_size))
        self.waiting: deque[int] = deque()  # rollouts waiting for a renderer
        self.building = self.building_max = 0  # bodies being built (now, and at most)
        self.gated: deque[int] = deque()  # rollouts waiting to build (max_inflight_builds)
        self.rollouts = [_Rollout() for _ in range(p.k)]
        self.fallbacks = self.requests = self.full_sent = self.null_sent = 0
        self.hits = self.misses = self.rederived = self.kept_new = 0
        self.shapes: dict[tuple[int, int, int], int] = {}
        self.client_ms = self.engine_ms = 0.0  # the CPU time each side spent

    def cost(self, ms: float) -> float:
        return ms * (1.0 + _COST_NOISE * (2.0 * self.rng.random() - 1.0))

    def client_job(self, ms: float, done: Callable[[], None]) -> None:
        work = self.cost(ms)
        self.client_ms += work
        self.client.add(work, done)

    # --- the client -----------------------------------------------------------------------

    def start_request(self, r: int) -> None:
        """The next request of rollout r: its turn's new images, or the resend of its last one."""
        p, ro = self.p, self.rollouts[r]
        images = p.n * p.m
        ro.keys = list(range(r * images, r * images + (ro.turn + 1) * p.m))
        ro.todo.clear()
        if ro.resend:
            ro.pixels, ro.mask = list(ro.kept), [True] * len(ro.keys)
        else:
            ro.todo.extend((key, False) for key in ro.keys[-p.m :])
            ro.pixels = ro.kept + [True] * p.m
            null_slots = p.mode.needs_engine_cache  # sends null slots
            ro.mask = [not (null_slots and key in self.sent) for key in ro.keys]
        for i, (key, in_full) in enumerate(zip(ro.keys, ro.mask, strict=True)):
            if in_full and not ro.pixels[i]:
                ro.todo.append((key, True))
                ro.pixels[i] = True
        self.next_render(r)

    def next_render(self, r: int) -> None:
        ro = self.rollouts[r]
        if ro.todo and self.p.mode.renders:
            self.waiting.append(r)
            self.hand_out()
            return
        if self.p.build_gate and self.building >= self.p.build_gate:
            self.gated.append(r)  # max_inflight_builds: waits for a build to end
            return
        self.building += 1
        self.building_max = max(self.building_max, self.building)
        t, full = self.p.timing, sum(ro.mask)
        self.client_job(t.build_fixed + t.build_item * full, partial(self.posted, r))

    def hand_out(self) -> None:
        """The pool gives its free renderers to the rollouts waiting, first come first served."""
        while self.waiting and self.free:
            r, slot = self.waiting.popleft(), self.free.popleft()
            key, again = self.rollouts[r].todo.popleft()
            cache = self.caches[slot]
            hit = key in cache
            if hit:
                self.hits += 1
            else:
                self.misses += 1
                if self.p.cache_max:
                    cache[key] = None
                    if len(cache) > self.p.cache_max:
                        cache.popitem(last=False)
            self.rederived += again
            self.kept_new += again and not hit and self.p.mode.stores_pixels
            ms = self.p.timing.render_hit if hit else self.p.timing.render_miss
            self.client_job(ms, partial(self.rendered, r, slot))

    def rendered(self, r: int, slot: int) -> None:
        self.free.append(slot)
        self.hand_out()
        self.next_render(r)

    # --- the engine -----------------------------------------------------------------------

    def posted(self, r: int) -> None:
        self.building -= 1
        if self.gated:
            self.next_render(self.gated.popleft())
        ro = self.rollouts[r]
        full = sum(ro.mask)
        self.requests += 1
        self.full_sent += full
        self.null_sent += len(ro.keys) - full
        shape = (ro.turn + 1, len(ro.keys), full)
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        self.engine_queue.append(r)
        if len(self.engine_queue) == 1:
            self.engine_start()

    def engine_start(self) -> None:
        """The request at the head of the queue is served now (the cache is the engine's alone, so
        its effects may be applied at once) and answered when its cost has run."""
        t, ro = self.p.timing, self.rollouts[self.engine_queue[0]]
        self.served = self.engine.serve(ro.keys, ro.mask)
        decoded = sum(ro.mask) if self.served else 0  # the items in full come after the null slots
        cost = t.engine_fixed + t.engine_item * sum(ro.mask) + t.engine_decode * decoded
        work = self.cost(cost)
        self.engine_ms += work
        self.engine_done_at = self.now + work

    def answered(self) -> None:
        p, r, served = self.p, self.engine_queue.popleft(), self.served
        ro = self.rollouts[r]
        self.engine_done_at = float("inf")
        if self.engine_queue:
            self.engine_start()
        if served:
            for key in ro.keys:
                self.sent.pop(key, None)
                self.sent[key] = None
            while len(self.sent) > p.sent_max:
                self.sent.popitem(last=False)
            ro.kept = [f and p.mode.stores_pixels for f in ro.mask]
            ro.resend = False
            ro.turn += 1
            if ro.turn == p.n:
                return
        else:
            for key in ro.keys:
                self.sent.pop(key, None)
            ro.kept = ro.pixels  # the resend ships what this attempt re-derived
            ro.resend = True
            self.fallbacks += 1
        self.start_request(r)

    # --- the clock ------------------------------------------------------------------------

    def run(self) -> dict[str, float]:
        order = list(range(self.p.k))
        self.rng.shuffle(order)
        for r in order:
            self.start_request(r)
        while True:
            client_in = self.client.next_in()
            engine_in = self.engine_done_at - self.now
            dt = min(client_in, engine_in)
            if dt == float("inf"):
                break
            self.client.advance(dt)
            self.now += dt
            if engine_in <= client_in:
                self.answered()
            else:
                self.client.pop_done()()
        out: dict[str, float] = dict(
            renders=self.hits + self.misses, renderer_cache_hits=self.hits, renderer_cache_misses=self.misses,
            rederived=self.rederived, renderer_cache_entries=sum(len(c) for c in self.caches),
            rederived_kept=self.kept_new, engine_cache_hits=self.engine.hits,
            engine_cache_misses=self.engine.misses, engine_cache_items=len(self.engine.lru),
            fallbacks=self.fallbacks, requests=self.requests, full_items_sent=self.full_sent,
            null_items_sent=self.null_sent,
            client_ms=self.client_ms, engine_ms=self.engine_ms, wall_ms=self.now,
        )  # fmt: skip
        for (t, items, full), count in self.shapes.items():
            out[f"shape:{t}:{items}:{full}"] = count
        return out


def _fallback_free(p: SimPoint) -> bool:
    """No request can fail: no null slots, or an engine cache (and a sent-hash LRU) that hold every
    image of the point, so nothing is evicted."""
    images = p.k * p.n * p.m
    return not p.mode.needs_engine_cache or (p.engine_items >= images and p.sent_max >= images)


def _needs_renders(p: SimPoint) -> bool:
    """Whether renders can hit a cache: only re-derivations do (every image is a new key)."""
    return p.mode.renders and (
        (not p.mode.stores_pixels and not p.mode.needs_engine_cache) or not _fallback_free(p)
    )


def _closed_form(p: SimPoint) -> dict[str, float]:
    """The counts where nothing fails and nothing is re-derived: every render is a miss of a new
    key, dealt to the renderers in rotation; every request ships its new images in full (and, in
    the modes that send null slots, the rest as hits), and the engine stores every item it gets."""
    images = p.k * p.n * p.m
    out: dict[str, float] = {"renders": 0, "renderer_cache_hits": 0, "renderer_cache_misses": 0,
                             "rederived": 0, "renderer_cache_entries": 0, "rederived_kept": 0}  # fmt: skip
    if p.mode.renders:
        per_slot, extra = divmod(images, p.pool_size)
        out.update(renders=images, renderer_cache_misses=images, renderer_cache_entries=(
            extra * min(p.cache_max, per_slot + 1) + (p.pool_size - extra) * min(p.cache_max, per_slot)
        ))  # fmt: skip
    nulls = p.k * p.m * p.n * (p.n - 1) // 2 if p.mode.needs_engine_cache else 0
    out.update(
        engine_cache_hits=nulls, engine_cache_misses=0, engine_cache_items=min(p.engine_items, images),
        fallbacks=0, requests=p.k * p.n, full_items_sent=p.k * p.m * p.n * (p.n + 1) // 2 - nulls,
        null_items_sent=nulls,
    )  # fmt: skip
    for t in range(1, p.n + 1):
        full = p.m if p.mode.needs_engine_cache else t * p.m
        out[f"shape:{t}:{t * p.m}:{full}"] = p.k
    return out


def _run(p: SimPoint, seed: int) -> dict[str, float]:
    if not _needs_renders(p) and _fallback_free(p):
        return _closed_form(p)
    return _Run(p, random.Random(seed)).run()


def _runs(first: dict[str, float]) -> int:
    """How many seeded runs a prediction averages: as many as the work budget allows."""
    work = max(1.0, first["renders"] + first["full_items_sent"] + first["null_items_sent"])
    return max(1, min(_RUNS_MAX, int(_WORK_BUDGET // work)))


@lru_cache(maxsize=1024)
def simulate(p: SimPoint) -> DriverCounts:
    """The expected counts of a point."""
    first = _run(p, 0)
    runs = _runs(first) if _needs_renders(p) or not _fallback_free(p) else 1
    results = [first] + [_run(p, seed) for seed in range(1, runs)]
    total: dict[str, float] = {}
    for res in results:
        for name, value in res.items():
            total[name] = total.get(name, 0.0) + value / runs
    shapes = []
    for name, count in total.items():
        if name.startswith("shape:"):
            t, items, full = (int(x) for x in name.split(":")[1:])
            shapes.append(((t, items, full), count))
    return DriverCounts(
        **{f: total[f] for f in DriverCounts.__dataclass_fields__ if f != "request_shapes"},
        request_shapes=tuple(sorted(shapes)),
    )


@dataclass(frozen=True, slots=True)
class DriverTime:
    """The driver's time in the simulation, in seconds: a check of the timing constants against
    the client_cpu_s, engine_cpu_s and rollout_wall_s a point measures (not a prediction mmbench
    prints)."""

    client_cpu_s: float
    engine_cpu_s: float
    wall_s: float


@lru_cache(maxsize=256)
def simulate_time(p: SimPoint) -> DriverTime:
    """The simulated run's CPU and wall time (always simulated, also where the counts have a
    closed form), averaged over the same runs as `simulate`."""
    first = _Run(p, random.Random(0)).run()
    results = [first] + [_Run(p, random.Random(seed)).run() for seed in range(1, _runs(first))]
    runs = len(results)
    mean = {f: sum(r[f] for r in results) / runs / 1000 for f in ("client_ms", "engine_ms", "wall_ms")}
    return DriverTime(mean["client_ms"], mean["engine_ms"], mean["wall_ms"])
