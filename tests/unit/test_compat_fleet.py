"""mmbench compat's fleet setups: chosen by group or by name, and a fleet's cells' verdicts
(a replica that died, the router's rescued misses), on hand-built records."""

from __future__ import annotations

import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.record import EngineRecord, PointRecord, ReplicaFigures, RouterFigures, Traffic
from mmbench.reporters.compat_report import cell_text
from mmbench.sweep.compat import (
    FALLS_BACK,
    REPLICA_DIES,
    SETUPS,
    WORKS,
    Cell,
    choose_setups,
    setup_of,
    verdict,
)


def test_the_default_setups_are_the_single_engines_and_a_group_name_gives_its_fleets() -> None:
    assert choose_setups(None) == SETUPS
    fleets = choose_setups(["fleet"])
    assert len(fleets) == 8 and all(s.engine == "embedded" for s in fleets)
    assert {s.overrides["session_header"][0] for s in fleets} == {"on", "off"}
    both = choose_setups(["embedded", "vllm-fleet-round_robin"])
    assert [s.name for s in both] == ["embedded", "vllm-fleet-round_robin"]
    with pytest.raises(MmbenchError, match="unknown engine setup 'fleet-x'"):
        choose_setups(["fleet-x"])


def test_a_fleet_record_belongs_to_its_setup() -> None:
    setups = choose_setups(["fleet", "embedded"])
    config = PointConfig(mode="hash-only", replicas=2, router_policy="consistent_hash", session_header="on")
    record = PointRecord(config=config, engine=EngineRecord(kind="embedded"))
    assert setup_of(record, setups) == "fleet-consistent_hash-session"
    single = PointRecord(config=PointConfig(), engine=EngineRecord(kind="embedded"))
    assert setup_of(single, setups) == "embedded"


def _fleet(traffic: Traffic, replicas: list[ReplicaFigures], retries: int = 0) -> PointRecord:
    config = PointConfig(mode="hash-only", rollouts=2, turns=3, replicas=2, router_policy="round_robin")
    engine = EngineRecord(kind="embedded", replicas=replicas, router=RouterFigures(retries=retries))
    return PointRecord(config=config, traffic=traffic, engine=engine)


def test_a_fleets_verdicts() -> None:
    alive = [ReplicaFigures(), ReplicaFigures()]
    dead = [ReplicaFigures(died=True, failure="it exited during the point"), ReplicaFigures()]
    assert verdict(_fleet(Traffic(requests=6), dead)) == (REPLICA_DIES, "1 of 2: it exited during the point")
    v, detail = verdict(_fleet(Traffic(requests=7, fallbacks=2, extra_bytes_shipped=2048), alive))
    assert v == FALLS_BACK and "50% of later turns, 2.0 KiB resent" in detail
    rescued = _fleet(Traffic(requests=6), alive, retries=3)
    assert verdict(rescued)[0] == WORKS
    assert cell_text(Cell("hash-only", "fleet-round_robin", WORKS, "", rescued)) == "works (3 router retries)"


def test_the_fleet_table_has_a_row_per_fleet_point_measured_beside_predicted() -> None:
    from mmbench.record import FleetFigures, PredictionFigures
    from mmbench.reporters.fleet_report import fleet_markdown, fleet_rows

    traffic = Traffic(requests=7, fallbacks=2, extra_bytes_shipped=2048, failed_rollouts=1)
    fleet = _fleet(traffic, [ReplicaFigures()] * 2)
    fleet = PointRecord(
        config=fleet.config, traffic=fleet.traffic,
        engine=EngineRecord(kind="embedded", fleet=FleetFigures(misses=2, duplication=1.5, balance=1.25)),
        prediction=PredictionFigures(fallbacks=3, fleet_misses=3, router_retries=0, failed_rollouts=0),
    )  # fmt: skip
    single = PointRecord(config=PointConfig())
    (row,) = fleet_rows([fleet, single])
    assert row[:5] == ["2", "hash-only", "round_robin", "off", "on"]
    assert row[7:12] == ["2 (3)", "2.0 KiB", "2 (3)", "- (0)", "1 (0)"] and row[12:14] == ["1.50", "1.25"]
    assert fleet_markdown([single]) == "" and "| 2 | hash-only |" in fleet_markdown([fleet])
