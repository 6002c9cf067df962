"""What a cluster adds to each point: N planned points of a trivial measurement through local:W.

    .venv/bin/python benchmarks/cluster_overhead.py [--points 500] [--workers 2]

Everything a clustered sweep does runs except the measurement itself: the client's prediction and
admission of each point, dask's scheduling, the worker's task (version check, start event, machine
block), the answer's way back, points.jsonl appended and fsynced, results.json/csv rewritten. The
same points through a trivial runner on this machine (no cluster) give the sweep's own share, so
the difference is the cluster's. Not a test: a figure to quote, measured where the machine is quiet.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

from mmbench.cluster.address import ClusterSpec
from mmbench.cluster.connect import open_cluster
from mmbench.cluster.runner import ClusterRunner
from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions
from mmbench.measure.machines import machine_block
from mmbench.results import PointRecord, read_points_log
from mmbench.sweep.loop import Finished, OnStart, PlannedPoint, run_sweep
from mmbench.sweep.scenarios import Scenario


def trivial(config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
    return PointRecord(config, repeat, machine=machine_block())


def trivial_here(
    todo: list[PlannedPoint], options: HarnessOptions, on_start: OnStart | None
) -> Generator[Finished, None, None]:
    for point in todo:
        yield [(point, trivial(point.config, point.repeat, options))]


def timed(scenario: Scenario, out: Path, runner: object) -> float:
    t0 = time.perf_counter()
    run_sweep(scenario, out, runner=runner)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert len(read_points_log(out)) == len(scenario.points())  # every point, once
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    grid = {"mode": ["full"], "rollouts": list(range(1, args.points + 1)), "image_size": ["64"], "turns": [1]}
    scenario = Scenario("overhead", "trivial points", grid)
    n = args.points
    with tempfile.TemporaryDirectory(prefix="mmbench-overhead-") as tmp:
        local = timed(scenario, Path(tmp, "local"), trivial_here)
        with open_cluster(ClusterSpec(None, args.workers)) as cluster:
            clustered = timed(scenario, Path(tmp, "cluster"), ClusterRunner(cluster.client, measure=trivial))
    ms = 1e3 / n
    where = f"{n} trivial points through local:{args.workers}"
    print(f"{where}: {clustered:.2f} s, {clustered * ms:.1f} ms per point")
    print(f"the same points without a cluster (writing results only): {local * ms:.1f} ms per point")
    print(f"the cluster's share: {(clustered - local) * ms:.1f} ms per point of sweep wall time")


if __name__ == "__main__":
    main()
