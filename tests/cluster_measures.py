"""Stand-in measurements for the cluster tests (tests/integration/test_cluster.py).

They run on dask workers, processes of their own that import what a task names: a test module is
not importable there, this one is (the test starts the workers with the repository on their path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions
from mmbench.measure.machines import machine_block
from mmbench.record import PointRecord, Traffic

NANNY_KEYS = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "PYTHONHASHSEED")  # some a nanny sets


def trivial(config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
    return PointRecord(
        config, repeat, traffic=Traffic(bytes_shipped=config.rollouts), machine=machine_block()
    )


def environment_probe(config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
    """Records, in `cause`, the nanny's variables as the point's processes would inherit them."""
    seen = {k: os.environ.get(k) for k in NANNY_KEYS}
    return replace(trivial(config, repeat, options), cause=json.dumps(seen))


# A stand-in measurement's process: it dies with the thread that started it, as the harness's
# worker and engine do, and runs until the test releases it (a file named after its pid).
CHILD = (
    "import os, sys, time\n"
    "from mmbench.launch.lifecycle import die_with_parent\n"
    "die_with_parent(int(sys.argv[2]))\n"
    "release = os.path.join(sys.argv[1], str(os.getpid()))\n"
    "deadline = time.monotonic() + 60\n"
    "while not os.path.exists(release) and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
)


def stand_in(release: Path, config: PointConfig, repeat: int, options: HarnessOptions) -> PointRecord:
    """Measures nothing: one child process, reported as the point's measuring process, runs until
    the test releases it or something kills it."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(release), str(os.getpid())])
    assert options.on_worker_start is not None
    options.on_worker_start(child.pid)
    code = child.wait()
    return trivial(config, repeat, options) if code == 0 else PointRecord(**config.to_dict(), status="failed")
