"""The model: what a point retains, ships and peaks at, predicted before it runs.

What it covers: the transport modes of mmbench.transports (what each does is stated once, by the
transport's capability flags, read through the point's facts: mmbench.facts; the raw-media modes,
whose engine preprocesses, in raw.py), any geometry, K, N, images per turn, source size, renderer
pool and cache size, engine cache size, sent-hash bound, codec and dtype, and the client knobs
(trim after build, a fixed mmap threshold; the build cap and the arena count measured to change
nothing beyond the spread). It predicts fault-free runs: engine faults (evictions, restarts, errors)
are not modelled.

- simulation.py simulates the rollout driver: the engine's queue and its LRU-by-bytes cache (null
  slots served or failed, resends), then the renderer pool (slots handed out in rotation, one FIFO
  cache each). It gives the renders that preprocess, cache hits, re-derivations, engine cache hits and
  misses, fallbacks, the requests by size and which pixels stay where.
- parts.py has the exact sizes: descriptors and token streams (sys.getsizeof of the real objects)
  and each request body (the codec's own bytes plus what each token, hash, placeholder and item adds).
- retained = the pixels the trajectories keep (+ what resends re-derive and keep) + sources + the
  pixels only the renderer caches hold + descriptors and token streams; bytes shipped = every
  simulated request's body.
- peak.py: the client's peak = live data + the allocator's slack + the transient; the engine's =
  baseline + cache + the bodies it holds. constants.py has every calibrated constant with the data
  it was fitted on; calibration.py re-fits them from results directories.

How well, measured / predicted on the 2-core reference machine (2026-12-01: the scenarios and sweeps
named in constants.py; docs/model.md has them per scenario): retained (live) 0.94-1.03
in every processed mode, renderer pool and cache size at 256x256 to 1024x1024 (0.85-1.04 where the
engine cache is smaller than the working set); bytes shipped 1.00 (0.98-1.21 with fallbacks); the
client's peak 0.55-1.00 (an upper bound of these runs; the same point's peak moves 0.85-1.14 between
runs; one point measured after the fit, ephemeral K=32 at 1024x1024, at 1.05, inside the margin);
the engine's peak 0.48-1.00; fallbacks exact without an engine cache and where it holds the working
set, and in between within the run-to-run spread but for one point (K=8 at 17 items: hash-only 25-34
measured over eleven runs (mean 28.7), 26 predicted; ephemeral+hash-only 16-17, 16).
"""

from __future__ import annotations

from dataclasses import replace

from mmbench.config import FLEET_ONLY, PointConfig
from mmbench.facts import GRID_BYTES, PIXEL_ITEMSIZE, PointFacts, facts_of
from mmbench.measure.model.constants import CONSTANTS, Constants
from mmbench.measure.model.fleet import fleet_counts
from mmbench.measure.model.parts import (  # the private names: for models built on these sizes
    _PAD_TOKEN_CHARS,
    _SIZE,
    _TEXT_TOKEN_CHARS,
    BodySize,
    _list_bytes,
    descriptor_bytes_per_rollout,
    item_objects,
    other_bytes_per_rollout,
)
from mmbench.measure.model.peak import PeakInputs, client_peak, engine_peak, peak_inputs, trims
from mmbench.measure.model.prediction import Prediction
from mmbench.measure.model.raw import explain_raw
from mmbench.measure.model.simulation import (
    DriverCounts,
    DriverTime,
    SimPoint,
    Timing,
    simulate,
    simulate_time,
)
from mmbench.measure.model.vllm import VLLM, vllm_engine_peak

# vllm-router 0.1.17's RSS, measured here (docs/fleet.md; results/fleet/matrix, 96 points): ~40 MiB
# idle, and at its peak up to ROUTER_PER_BODY bodies as large as the point's largest per rollout in
# flight: it parses each body and serializes it again (full, K=8, 64 MiB bodies: 509-956 MiB above
# idle, 1.0-1.9 a rollout; hash-only, 8 MiB: 112-654, the high end the full resends; raw-media
# JSON, 5.7 MiB: 114-153, 2.5-3.4). What a fleet's engine peak adds.
ROUTER_IDLE_BYTES = 40 * 1024**2
ROUTER_PER_BODY = {True: 2.0, False: 3.5}  # processed items (True), raw media (False)
# The item the timing constants are measured at: 512x512, float32 (Qwen3-VL: 1024 rows of 1536).
TIMING_PIXELS = 512 * 512
TIMING_ITEM_BYTES = 1024 * 1536 * 4

__all__ = [
    "GRID_BYTES",
    "PIXEL_ITEMSIZE",
    "_PAD_TOKEN_CHARS",
    "_SIZE",
    "_TEXT_TOKEN_CHARS",
    "Prediction",
    "_list_bytes",
    "counts",
    "explain",
    "item_objects",
    "predict",
    "trims",
]


def _sim_point(f: PointFacts, constants: Constants) -> SimPoint:
    """What the driver's simulation of this point depends on."""
    config, layout, item = f.config, f.layout, f.cache_item_bytes
    return SimPoint(
        f.mode, config.rollouts, config.turns, config.images_per_turn, config.pool_size,
        config.image_cache_max, f.engine_cache_items, config.sent_hashes_max,
        timing(layout.resized_height * layout.resized_width, item, constants, config.codec),
        config.max_inflight_builds,
    )  # fmt: skip


def counts(config: PointConfig | PointFacts, constants: Constants = CONSTANTS) -> DriverCounts:
    """The driver simulated for this point (see mmbench.measure.model.simulation)."""
    f = config if isinstance(config, PointFacts) else facts_of(config)
    return simulate(_sim_point(f, constants))


def driver_time(config: PointConfig, constants: Constants = CONSTANTS) -> DriverTime:
    """The simulated driver's CPU and wall time for this point: a check of the timing constants,
    not a prediction mmbench prints (the processed modes only; raw media is not simulated)."""
    return simulate_time(_sim_point(facts_of(config), constants))


def timing(pixels: int, item_bytes: int, constants: Constants = CONSTANTS, codec: str = "fast") -> Timing:
    """The driver's CPU costs at this item size and codec: renders scale with the resized image's
    pixels, builds and the engine's work with the item's bytes (the constants are for 512x512
    float32 and the `fast` codec; a slower codec's builds cost its factor more)."""
    render = pixels / TIMING_PIXELS
    body = item_bytes / TIMING_ITEM_BYTES
    miss, hit, item, fixed, engine_item, engine_decode, engine_fixed = constants.timing
    build = body * constants.build_factor(codec)
    return Timing(
        miss * render, hit * render, item * build, fixed,
        engine_item * body, engine_decode * body, engine_fixed,
    )  # fmt: skip


def predict(
    config: PointConfig, source_bytes_per_image: float, constants: Constants = CONSTANTS,
    engine: str = "embedded",
) -> Prediction:  # fmt: skip
    """The model's prediction for one point, from the mean encoded source size per image, with the
    engine that serves it (embedded, or vllm: model/vllm.py)."""
    return explain(config, source_bytes_per_image, constants, engine)[0]


def explain(
    config: PointConfig, source_bytes_per_image: float, constants: Constants = CONSTANTS,
    engine: str = "embedded",
) -> tuple[Prediction, PeakInputs]:  # fmt: skip
    """The prediction and what its peaks are made of (mmbench.measure.model.peak)."""
    f = facts_of(config)
    prediction, inputs = _explain(f, source_bytes_per_image, constants)
    if config.replicas:
        prediction = _in_fleet(f, prediction, engine)
        fleet = _fleet_engine(f, prediction, inputs, source_bytes_per_image, constants, engine)
        prediction, engine_floor = fleet
    else:
        engine_floor = constants.engine_baseline + prediction.engine_cache_bytes
        if engine == VLLM:
            peak = vllm_engine_peak(inputs, prediction.engine_cache_bytes, constants)
            prediction = replace(prediction, engine_peak_bytes=peak)
            engine_floor = constants.vllm_baseline
    shares = constants.typical_shares(f.mode.renders, engine == VLLM)
    return _with_typical(prediction, shares[0], engine_floor, shares[1]), inputs


def _fleet_engine(
    f: PointFacts, p: Prediction, inputs: PeakInputs, source_bytes_per_image: float, constants: Constants,
    engine: str,
) -> tuple[Prediction, int]:  # fmt: skip
    """A fleet's engine peak (its replicas' peaks summed, and the router's) and floor: each replica
    at one engine's peak serving its share of the rollouts (K / R, rounded up) with its share of the
    fleet's cache (each item counted on every replica that holds it), and the router holding the
    bodies in flight. Where the client falls back, a share of the requests are full resends: the
    replicas and the router hold bodies like full mode's, in that share (fallbacks over the later
    turns' requests). Not a bound under an uneven policy (consistent_hash's ring put 3/4 of the
    rollouts on one of 2 replicas); the sum of R single-engine peaks at K was one, and over-predicted
    an even pair of vLLMs by 37 % (12.9 GiB against 9.4 measured, full, K = 8)."""
    c, r = f.config, f.config.replicas
    alone = replace(c, replicas=0, session_header="off", **FLEET_ONLY)  # type: ignore[arg-type]  # one engine's
    share = replace(alone, rollouts=-(-c.rollouts // r))
    cache = p.engine_cache_bytes // r

    def replica_and_router(config: PointConfig, largest_body: int) -> tuple[float, float]:
        one, one_inputs = _explain(facts_of(config), source_bytes_per_image, constants)
        if engine == VLLM:
            replica = vllm_engine_peak(one_inputs, cache, constants)
        else:
            replica = one.engine_peak_bytes - one.engine_cache_bytes + cache
        bodies = ROUTER_PER_BODY[f.mode.renders] * c.rollouts * largest_body
        return float(replica), ROUTER_IDLE_BYTES + bodies

    replica, router = replica_and_router(share, inputs.largest_body)
    resent = min(1.0, p.fallbacks / max(1, c.rollouts * (c.turns - 1))) if f.mode.renders else 0.0
    if resent:
        _, full_inputs = _explain(facts_of(replace(alone, mode="full")), source_bytes_per_image, constants)
        full_replica, full_router = replica_and_router(replace(share, mode="full"), full_inputs.largest_body)
        replica += resent * max(0.0, full_replica - replica)
        router += resent * max(0.0, full_router - router)
    baseline = constants.vllm_baseline if engine == VLLM else constants.engine_baseline
    floor = r * baseline + (0 if engine == VLLM else p.engine_cache_bytes)
    return replace(p, engine_peak_bytes=int(r * replica + router)), floor + ROUTER_IDLE_BYTES


def _in_fleet(f: PointFacts, p: Prediction, engine: str) -> Prediction:
    """A fleet's prediction: the router's misses, retries and the client's fallbacks (each resending
    its turn in full), the replicas' caches summed (an item cached on several replicas counts on
    each) and, raw media, each replica's own preprocessing (mmbench.measure.model.fleet)."""
    fc = fleet_counts(f.config, slow=engine == VLLM)
    body = BodySize(f.config, f.layout, f.itemsize)
    resent = round(sum(count * body(*shape) for shape, count in fc.resend_shapes)) if f.mode.renders else 0
    shipped = p.bytes_shipped + resent
    return replace(
        p, router_retries=round(fc.router_retries), failed_rollouts=round(fc.failed_rollouts),
        # the replicas' cache misses: null slots they lacked, or (raw media) images they preprocessed
        fleet_misses=round(fc.misses) if f.mode.renders else round(fc.preprocess_calls),
        fallbacks=p.fallbacks + round(fc.fallbacks), bytes_shipped=shipped,
        bytes_shipped_per_rollout=shipped // f.config.rollouts,
        engine_cache_bytes=round(fc.cached_items * f.cache_item_bytes),
        engine_preprocess_calls=p.engine_preprocess_calls if f.mode.renders else round(fc.preprocess_calls),
    )  # fmt: skip


def _with_typical(p: Prediction, client_share: float, engine_floor: int, engine_share: float) -> Prediction:
    """The prediction with its typical peaks: each bound's part above what the model knows exactly
    (the client's live data; the engine's baseline and cache) scaled to the calibration's median."""
    live = p.retained_bytes
    client = live + int(client_share * max(0, p.peak_bytes - live))
    engine = engine_floor + int(engine_share * max(0, p.engine_peak_bytes - engine_floor))
    return replace(
        p, typical_peak_bytes=client, typical_engine_peak_bytes=engine, engine_floor_bytes=engine_floor
    )


def _explain(
    f: PointFacts, source_bytes_per_image: float, constants: Constants
) -> tuple[Prediction, PeakInputs]:
    if not f.mode.renders:
        return explain_raw(f, source_bytes_per_image, constants)
    config, mode, layout, itemsize, pixel = f.config, f.mode, f.layout, f.itemsize, f.pixel_bytes
    k, n, m = config.rollouts, config.turns, config.images_per_turn
    sim = counts(f, constants)

    pixels = int((k * n * m + sim.rederived_kept) * pixel) if mode.stores_pixels else 0
    cache_only = 0 if mode.stores_pixels else int(sim.renderer_cache_entries * pixel)
    sources = int(k * n * m * source_bytes_per_image)
    descriptors = k * descriptor_bytes_per_rollout(config, mode)
    other = k * other_bytes_per_rollout(config, layout)
    retained = pixels + sources + cache_only + descriptors + other

    body = BodySize(config, layout, itemsize)
    # round, not int: the counts are averages over simulated runs (12 may be 11.999999999999998)
    shipped = round(sum(count * body(*shape) for shape, count in sim.request_shapes))
    engine_cache = int(sim.engine_cache_items * f.cache_item_bytes)
    # The renderer makes float32 pixels before any cast: the allocator's holes are float32-sized.
    body_float32 = body if itemsize == 4 else BodySize(config, layout, 4)
    inputs = peak_inputs(config, mode, sim, retained, body, body_float32, pixel, layout.pixel_bytes(4))
    prediction = Prediction(
        retained_bytes=retained,
        pixel_bytes=pixels,
        source_bytes=sources,
        renderer_cache_only_bytes=cache_only,
        descriptor_bytes=descriptors,
        other_bytes=other,
        bytes_shipped=shipped,
        bytes_shipped_per_rollout=shipped // k,
        peak_bytes=client_peak(inputs, constants),
        pixel_bytes_per_image=pixel,
        engine_cache_bytes=engine_cache,
        engine_peak_bytes=engine_peak(inputs, engine_cache, constants),
        client_baseline_bytes=constants.client_baseline,
        renderer_cache_hits=round(sim.renderer_cache_hits),
        renderer_cache_misses=round(sim.renderer_cache_misses),
        rederived=round(sim.rederived),
        engine_cache_hits=round(sim.engine_cache_hits),
        engine_cache_misses=round(sim.engine_cache_misses),
        fallbacks=round(sim.fallbacks),
        requests=round(sim.requests),
        full_items_sent=round(sim.full_items_sent),
        null_items_sent=round(sim.null_items_sent),
    )
    return prediction, inputs
