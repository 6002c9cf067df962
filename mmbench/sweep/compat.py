"""`mmbench compat`: which transport modes survive which engine configuration.

A small point of every mode runs against each configuration (a vLLM is started once per
configuration and reset between its points; a point that kills it leaves the next a fresh one; no
warm-up: the question is what works, not what memory it takes): the embedded engine, and a real vLLM
as deployed by default, with its multimodal processor cache off, with the shared-memory cache, and
behind two API servers. Each cell is what the engine did with that mode: it works, the client falls
back (a null slot the engine could not serve, resent in full), a request fails (the engine answered
an error the mode cannot recover from), or the engine dies (it no longer serves: its own last
error). The answer to "can I turn hash-only on for my engine?" before a rollout.

With --setups fleet (embedded) or vllm-fleet, each cell is a fleet: two replicas behind vllm-router
(its retries and circuit breaker as shipped) under each policy a rollout framework uses, with and
without the per-rollout X-Session-ID header; a cell where a replica died says so.

The points are ordinary sweeps' records, in two results directories under the output directory:
`embedded/` and `vllm/` (the vLLM configurations differ by point parameters, so one directory
holds them all), each resumable and reportable like any sweep's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engine_pool import engine_pool
from mmbench.measure.engines import VLLM, Embedded, Vllm
from mmbench.measure.harness import HarnessOptions
from mmbench.results import PointRecord
from mmbench.sweep.loop import OnDone, OnStart, run_sweep
from mmbench.sweep.scenarios import Scenario, Variant
from mmbench.transports.registry import MODES
from mmbench.units import fmt_bytes

# The point every cell measures: small, but with a null slot on every turn after the first.
POINT: dict[str, list[Any]] = {"rollouts": [2], "turns": [3], "image_size": ["256"], "codec": ["vllm"]}


@dataclass(frozen=True, slots=True)
class EngineSetup:
    name: str
    engine: str  # embedded or vllm
    overrides: dict[str, list[Any]]  # point parameters that make this configuration
    description: str


SETUPS = (
    EngineSetup("embedded", "embedded", {}, "mmbench's embedded engine (LRU-by-bytes mm cache, 4 GiB)"),
    EngineSetup("vllm", VLLM, {}, "vLLM as deployed by default (LRU processor cache, 4 GiB)"),
    EngineSetup("vllm-cache-0", VLLM, {"engine_cache_gb": [0.0]}, "vLLM with --mm-processor-cache-gb 0"),
    EngineSetup(
        "vllm-shm",
        VLLM,
        {"engine_args": ["--mm-processor-cache-type shm"]},
        "vLLM with --mm-processor-cache-type shm",
    ),
    EngineSetup(
        "vllm-api-servers-2",
        VLLM,
        {"engine_args": ["--api-server-count 2"]},
        "vLLM behind two API servers (--api-server-count 2)",
    ),
)
# A fleet (--setups fleet, vllm-fleet, or one of their names; not run by default): two replicas
# behind vllm-router with its retries and circuit breaker as shipped, under each policy a rollout
# framework uses, with and without the per-rollout X-Session-ID header.
FLEET_POLICIES = ("round_robin", "cache_aware", "consistent_hash", "sticky_least_loaded")
FLEET_REPLICAS = 2


def _fleet_setups(engine: str, prefix: str, what: str) -> tuple[EngineSetup, ...]:
    out = []
    for policy in FLEET_POLICIES:
        for header in ("on", "off"):
            overrides: dict[str, list[Any]] = {
                "replicas": [FLEET_REPLICAS],
                "router_policy": [policy],
                "session_header": [header],
            }
            name = f"{prefix}-{policy}{'-session' if header == 'on' else ''}"
            text = f"{FLEET_REPLICAS} x {what} behind vllm-router, {policy}, X-Session-ID {header}"
            out.append(EngineSetup(name, engine, overrides, text))
    return tuple(out)


FLEET_SETUPS = {
    "fleet": _fleet_setups("embedded", "fleet", "embedded"),
    "vllm-fleet": _fleet_setups(VLLM, "vllm-fleet", "vLLM (default cache)"),
}
ALL_SETUPS = SETUPS + FLEET_SETUPS["fleet"] + FLEET_SETUPS["vllm-fleet"]
SETUP_NAMES = tuple(s.name for s in ALL_SETUPS)
# the point parameters the setups differ by
SETUP_KEYS = ("engine_cache_gb", "engine_args", "replicas", "router_policy", "session_header")
WORKS, FALLS_BACK, FAILS, DIES = "works", "falls back", "request fails", "engine dies"
REPLICA_DIES = "a replica dies"


@dataclass(frozen=True, slots=True)
class Cell:
    mode: str
    setup: str
    verdict: str  # WORKS, FALLS_BACK, FAILS, DIES, or the record's status where it did not run
    detail: str  # how often it fell back, or the engine's message
    record: PointRecord


@dataclass(frozen=True, slots=True)
class CompatResult:
    modes: tuple[str, ...]
    setups: tuple[EngineSetup, ...]
    cells: tuple[Cell, ...]
    versions: dict[str, str]  # setup name -> engine version
    out_dir: Path | None

    def cell(self, mode: str, setup: str) -> Cell | None:
        return next((c for c in self.cells if c.mode == mode and c.setup == setup), None)


def choose_setups(names: list[str] | None) -> tuple[EngineSetup, ...]:
    """The setups named (a fleet group's name: all of its setups); none named: the single engines."""
    if not names:
        return SETUPS
    wanted: set[str] = set()
    for name in names:
        if name in FLEET_SETUPS:
            wanted.update(s.name for s in FLEET_SETUPS[name])
        elif name in SETUP_NAMES:
            wanted.add(name)
        else:
            choices = ", ".join([*SETUP_NAMES[: len(SETUPS)], *FLEET_SETUPS, "or a fleet setup's name"])
            raise MmbenchError(f"unknown engine setup {name!r}; choose from: {choices}")
    return tuple(s for s in ALL_SETUPS if s.name in wanted)


def scenario_for(setups: tuple[EngineSetup, ...], modes: tuple[str, ...], engine: str) -> Scenario:
    chosen = [s for s in setups if s.engine == engine]
    grid = {"mode": list(modes), **POINT}
    variants = tuple(Variant(s.name, s.overrides) for s in chosen) if len(chosen) > 1 else ()
    if len(chosen) == 1:
        grid.update(chosen[0].overrides)
    return Scenario(f"compat-{engine}", "compat: every mode on each engine setup", grid, variants=variants)


def verdict(record: PointRecord) -> tuple[str, str]:
    """What the engine did with the point: a verdict and its detail (the engine's own words)."""
    if record.engine.failure:
        return DIES, record.engine.failure
    dead = [r for r in record.engine.replicas or [] if r.died]
    if dead:
        return REPLICA_DIES, f"{len(dead)} of {len(record.engine.replicas or [])}: {dead[0].failure}"
    if record.status == "failed":
        return FAILS, record.cause or "(no cause recorded)"
    if record.status != "ok":
        return record.status, record.cause or ""
    t = record.traffic
    if t.fallbacks:
        first = f"; first: {t.fallback_error}" if t.fallback_error else ""
        c = record.config
        later = c.rollouts * (c.turns - 1)
        share = f" ({t.fallbacks / later:.0%} of later turns, {fmt_bytes(t.extra_bytes_shipped)} resent)"
        return FALLS_BACK, f"{t.fallbacks} of {t.requests} requests resent in full{share}{first}"
    retries = record.engine.router.retries
    if retries:
        return WORKS, f"the router retried {retries} time(s) (misses it rescued on another replica)"
    return WORKS, ""


def _signature(engine: str, values: dict[str, Any]) -> tuple[Any, ...]:
    defaults = PointConfig()
    return (engine, *(values.get(k, getattr(defaults, k)) for k in SETUP_KEYS))


def setup_of(record: PointRecord, setups: tuple[EngineSetup, ...]) -> str | None:
    """Which setup a record belongs to: its engine, and the point parameters setups differ by."""
    engine = VLLM if record.engine.kind == VLLM else "embedded"
    wanted = _signature(engine, {k: getattr(record.config, k) for k in SETUP_KEYS})
    for s in setups:
        if _signature(s.engine, {k: v[0] for k, v in s.overrides.items()}) == wanted:
            return s.name
    return None


def run_compat(
    out_dir: Path | None, setups: tuple[EngineSetup, ...], modes: tuple[str, ...], vllm: Vllm,
    on_start: OnStart | None = None, on_done: OnDone | None = None,
    on_engine: Callable[[str], None] | None = None,
) -> CompatResult:  # fmt: skip
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise MmbenchError(f"unknown mode {unknown[0]!r}; choose from: {', '.join(MODES)}")
    records: list[PointRecord] = []
    for engine, served_by in (("embedded", Embedded()), (VLLM, vllm)):
        if not any(s.engine == engine for s in setups):
            continue
        if on_engine:
            on_engine(engine)
        scenario = scenario_for(setups, modes, engine)
        where = out_dir / engine if out_dir is not None else None
        with engine_pool(share_modes=True) as pool:  # what works, not what memory it takes
            options = HarnessOptions(engine=served_by, warm_engine=False, engine_pool=pool)
            records += run_sweep(scenario, where, options, on_start, on_done).points
    cells, versions = [], {}
    for record in records:
        name = setup_of(record, setups)
        if name is None:
            continue
        v, detail = verdict(record)
        cells.append(Cell(record.config.mode, name, v, detail, record))
        versions[name] = record.engine.version or ("mmbench embedded" if record.engine.kind != VLLM else "?")
    return CompatResult(modes, setups, tuple(cells), versions, out_dir)
