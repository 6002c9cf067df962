"""--cluster parsing, placement by declared memory, and the worker's version check (no cluster)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmbench import __version__
from mmbench.cluster.address import ClusterSpec, parse_cluster
from mmbench.cluster.placement import (
    MEMORY_RESOURCE,
    SLOT_RESOURCE,
    WorkerSlot,
    admissible,
    fits_some,
    resources_for,
    slots_of,
)
from mmbench.cluster.task import environment_as_without_dask, job_for, nanny_environ, version_refusal
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.harness import HarnessOptions
from mmbench.results import SCHEMA_VERSION

GIB = 1024**3


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("local:2", ClusterSpec(None, 2)),
        (" local:16 ", ClusterSpec(None, 16)),
        ("tcp://10.0.0.5:8786", ClusterSpec("tcp://10.0.0.5:8786")),
        ("tls://sched.example:8786", ClusterSpec("tls://sched.example:8786")),
    ],
)
def test_cluster_names_parse(text: str, spec: ClusterSpec) -> None:
    assert parse_cluster(text) == spec


@pytest.mark.parametrize("text", ["local:0", "local:", "local:x", "local:65", "host:8786", "http://h:1", ""])
def test_a_bad_cluster_name_is_one_error_line(text: str) -> None:
    with pytest.raises(MmbenchError) as err:
        parse_cluster(text)
    assert "\n" not in str(err.value) and "--cluster" in str(err.value)


def test_a_scheduler_file_names_the_address(tmp_path: Path) -> None:
    good = tmp_path / "scheduler.json"
    good.write_text(json.dumps({"address": "tcp://127.0.0.1:8786", "type": "Scheduler"}))
    assert parse_cluster(str(good)) == ClusterSpec("tcp://127.0.0.1:8786")
    for text in ("{not json", json.dumps({"type": "Scheduler"}), json.dumps(["tcp://x:1"])):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(MmbenchError, match="scheduler file"):
            parse_cluster(str(bad))


def test_only_workers_declaring_the_mmbench_resource_take_points() -> None:
    info = {
        "tcp://a:1": {"resources": {SLOT_RESOURCE: 1, MEMORY_RESOURCE: 8 * GIB}},
        "tcp://b:1": {"resources": {"GPU": 1}},
        "tcp://c:1": {"resources": {SLOT_RESOURCE: 1}},
        "tcp://d:1": {},
    }
    assert slots_of(info) == [WorkerSlot("tcp://a:1", 8 * GIB), WorkerSlot("tcp://c:1", 0.0)]


def test_a_point_asks_for_one_slot_and_its_memory_unless_forced() -> None:
    assert resources_for(3 * GIB) == {SLOT_RESOURCE: 1, MEMORY_RESOURCE: 3.0 * GIB}
    assert resources_for(None) == {SLOT_RESOURCE: 1}


SMALL, BIG = WorkerSlot("s", 2 * GIB), WorkerSlot("b", 16 * GIB)


def test_a_point_fits_when_some_worker_offers_its_need() -> None:
    assert fits_some(2 * GIB, [SMALL, BIG]) and fits_some(16 * GIB, [SMALL, BIG])
    assert not fits_some(16 * GIB + 1, [SMALL, BIG])
    assert fits_some(None, [SMALL])  # --force: any worker


def test_admission_keeps_no_point_waiting_behind_another_on_the_only_worker_it_fits() -> None:
    workers = [SMALL, BIG]
    assert admissible(10 * GIB, [], workers, depth=1)
    assert not admissible(10 * GIB, [10 * GIB], workers, depth=1)  # only BIG holds either
    assert admissible(1 * GIB, [10 * GIB], workers, depth=1)  # SMALL is free for it
    assert not admissible(1 * GIB, [10 * GIB, 1 * GIB], workers, depth=1)  # both busy
    assert admissible(10 * GIB, [1 * GIB], workers, depth=1)  # the small one can move to SMALL
    assert not admissible(None, [None, None], workers, depth=1)
    assert not admissible(1 * GIB, [], [], depth=1)
    # two places per worker: one running, one waiting
    assert admissible(10 * GIB, [10 * GIB], workers)
    assert not admissible(10 * GIB, [10 * GIB, 10 * GIB], workers)
    assert admissible(1 * GIB, [10 * GIB, 10 * GIB], workers)
    assert not admissible(None, [None, None, 1 * GIB, 2 * GIB], workers)


def _job() -> dict[str, object]:
    return job_for(PointConfig(mode="full", rollouts=1), 0, HarnessOptions(force=True), timeline=False)


def test_a_worker_refuses_a_job_of_another_mmbench_or_schema() -> None:
    job = _job()
    assert version_refusal(job, "tcp://w:1 (host)") is None
    assert job["options"] == {"force": True, "max_memory": None, "timeout_s": 3600.0, "memray_native": False}
    other = version_refusal({**job, "mmbench": "9.9.9"}, "tcp://w:1 (host)")
    assert other is not None and "mmbench 9.9.9" in other and f"runs mmbench {__version__}" in other
    assert "tcp://w:1 (host)" in other and "install" in other
    schema = version_refusal({**job, "schema_version": SCHEMA_VERSION + 1}, "w")
    assert schema is not None and f"schema {SCHEMA_VERSION + 1}" in schema
    assert version_refusal({"config": {}}, "w") is not None  # not even a version: refused


def test_a_point_runs_without_the_variables_dasks_nanny_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    added = nanny_environ()
    assert added["MALLOC_TRIM_THRESHOLD_"] == "65536" and added["OMP_NUM_THREADS"] == "1"
    for k, v in added.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # set to another value: the user's own, kept
    monkeypatch.setenv("MMBENCH_UNRELATED", "x")
    with environment_as_without_dask():
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ and "PYTHONHASHSEED" not in os.environ
        assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MMBENCH_UNRELATED"] == "x"
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # the worker's own, put back
