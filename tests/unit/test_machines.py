"""Records measured on different machines: never one fit through them; tables, reports and
extrapolation say which machine. Hand-built records, no measurement."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from mmbench.analysis.extrapolate import extrapolate
from mmbench.analysis.fits import group, mode_fits
from mmbench.analysis.report import build_report
from mmbench.config import PointConfig
from mmbench.measure.machines import machine_block, machine_of, machines, machines_differ
from mmbench.reporters.markdown import render_csv, title
from mmbench.reporters.table import sweep_table
from mmbench.results import CSV_COLUMNS, PointRecord, ResultsFile, to_csv
from mmbench.units import GIB, MIB
from tests.helpers import flat_record

SMALL = {"machine_cpu_model": "CPU A", "machine_cpu_count": 2, "machine_memory_bytes": 24 * GIB}
BIG = {"machine_cpu_model": "CPU B", "machine_cpu_count": 64, "machine_memory_bytes": 512 * GIB}
# image_cache_max 16, 8 turns: the caches are full from K=2, so every K below is fitted.
POINT: dict[str, Any] = {"mode": "full", "turns": 8, "image_cache_max": 16}


def rec(k: int, live_mib_per_k: float, machine: dict[str, Any] | None, status: str = "ok") -> PointRecord:
    live = int(live_mib_per_k * k * MIB) if status == "ok" else None
    return flat_record(
        **PointConfig(rollouts=k, **POINT).to_dict(), status=status, retained_live_bytes=live,
        retained_bytes=live, bytes_shipped=k * MIB if live else None, predicted_retained_bytes=k * MIB,
        **(machine or {}),
    )  # fmt: skip


def test_a_machine_is_its_kind_of_hardware() -> None:
    assert machine_of(rec(2, 1, SMALL)) == "CPU A, 2 CPUs, 24 GiB"
    assert machine_of(rec(2, 1, None)) is None
    other_host = rec(2, 1, {**SMALL, "machine_host": "node-7"})
    assert machine_of(other_host) == machine_of(rec(2, 1, {**SMALL, "machine_host": "node-1"}))
    block = machine_block()
    assert block.host and block.cpu_count and block.memory_bytes
    assert block.environment is not None
    assert {"mmbench", "python", "torch", "timestamp_utc"} <= set(block.environment)


def test_points_no_machine_measured_do_not_make_machines_differ() -> None:
    assert not machines_differ([rec(2, 1, SMALL), rec(4, 1, SMALL), rec(8, 0, None, "skipped")])
    assert machines_differ([rec(2, 1, SMALL), rec(2, 1, BIG)])
    assert machines([rec(2, 1, BIG), rec(2, 1, SMALL), rec(4, 1, BIG)]) == [
        machine_of(rec(1, 1, BIG)),
        machine_of(rec(1, 1, SMALL)),
    ]


def _two_machines() -> list[PointRecord]:
    # The same points on both: CPU A retains 10 MiB per rollout, CPU B 30.
    return [rec(k, 10, SMALL) for k in (2, 4, 8)] + [rec(k, 30, BIG) for k in (2, 4, 8)]


def test_one_fit_per_machine_never_one_line_through_both() -> None:
    fits = mode_fits(_two_machines())
    assert [(f.machine, round(f.fit.slope / MIB, 6)) for f in fits] == [
        ("CPU A, 2 CPUs, 24 GiB", 10.0),
        ("CPU B, 64 CPUs, 512 GiB", 30.0),
    ]
    assert fits[0].label == "full on CPU A, 2 CPUs, 24 GiB"
    [same] = mode_fits([rec(k, 10, SMALL) for k in (2, 4, 8)])
    assert same.machine is None and same.label == "full"  # one machine: as before


def test_repeats_on_different_machines_are_not_folded_into_one_median() -> None:
    groups = group(_two_machines())
    assert len(groups) == 6 and {g.machine for g in groups} == {
        machine_of(rec(1, 1, SMALL)),
        machine_of(rec(1, 1, BIG)),
    }
    assert all(g.machine is None for g in group([rec(k, 10, SMALL) for k in (2, 4)]))


def test_the_sweep_table_names_the_machine_only_where_machines_differ() -> None:
    header = [c.header for c in sweep_table(_two_machines()).columns]
    assert header[-1] == "machine"
    assert "machine" not in [c.header for c in sweep_table([rec(2, 10, SMALL)]).columns]


def test_a_point_no_worker_could_hold_is_extrapolated_from_the_roomiest_machine() -> None:
    records = [*_two_machines(), rec(64, 0, None, "skipped")]
    out = extrapolate(records)[-1]
    assert out.status == "extrapolated"
    assert out.client.retained_live_bytes == pytest.approx(64 * 30 * MIB, rel=1e-9)
    assert out.cause is not None and "on CPU B, 64 CPUs, 512 GiB" in out.cause
    alone = extrapolate([*(rec(k, 10, SMALL) for k in (2, 4, 8)), rec(64, 0, None, "skipped")])[-1]
    assert alone.status == "extrapolated" and alone.cause is not None and " on " not in alone.cause


def test_the_report_has_a_section_per_machine_and_says_so() -> None:
    env = {"cpu_model": "Client CPU", "cpu_count": 4, "memory_total_bytes": 8 * GIB}
    report = build_report(ResultsFile(env, {"name": "cluster"}, _two_machines()))
    assert [dict(s.params)["machine"] for s in report.sections] == [
        "CPU A, 2 CPUs, 24 GiB",
        "CPU B, 64 CPUs, 512 GiB",
    ]
    slopes = [s.summaries[0].fit.slope / MIB for s in report.sections]  # type: ignore[union-attr]
    assert slopes == pytest.approx([10.0, 30.0])
    assert report.machines and "2 kinds of machine" in title(report)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["machine"] for r in rows} == set(report.machines)
    one = build_report(ResultsFile(env, {"name": "one"}, [rec(k, 10, SMALL) for k in (2, 4)]))
    assert (
        not one.machines and "Client CPU" in title(one) and "machine" not in render_csv(one).splitlines()[0]
    )


def test_the_environment_block_is_one_json_cell_in_csv() -> None:
    record = rec(2, 10, {**SMALL, "machine_environment": {"mmbench": "0.1.0", "torch": "2.13.0"}})
    [row] = csv.DictReader(io.StringIO(to_csv([record])))
    assert list(row) == CSV_COLUMNS
    assert json.loads(row["machine.environment"]) == {"mmbench": "0.1.0", "torch": "2.13.0"}
    assert PointRecord.from_dict(record.to_dict()) == record
