"""The real-engine tier (make test-vllm): mmbench starts, measures and stops a real vLLM.

Needs the vLLM environment (`make vllm`; MMBENCH_VLLM_PYTHON names it, as make test-vllm sets it).
Each vLLM takes ~40 s to start here, so the tier is a handful of points: one small point of every
mode at K = 1 and 2 on two reused engines (each started, asked until ready, warmed, reset between
points, measured as a process tree and stopped; no process may be left after any test), each crash
case of the compatibility matrix (a fresh engine each: the point kills it), and the one-line errors
of a bad model directory and of a vLLM that never becomes ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.measure.engines import VLLM, Vllm
from mmbench.measure.harness import HarnessOptions
from mmbench.sweep.compat import DIES, FALLS_BACK, WORKS, choose_setups, run_compat
from mmbench.sweep.loop import run_sweep
from mmbench.sweep.scenarios import Scenario
from mmbench.transports.registry import MODES

# a test here starts up to six vLLMs of ~45 s each: more than pyproject's 300 s for one test
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
SMALL = {"rollouts": [1], "turns": [2], "image_size": ["256"], "codec": ["vllm"]}


def vllm_processes() -> list[psutil.Process]:
    """Every process of a vLLM that mmbench started, anywhere on the machine."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any("mmbench_vllm_serve.py" in c for c in cmd) or (cmd and cmd[0].startswith("VLLM::")):
            found.append(p)
    return found


@pytest.fixture(autouse=True)
def no_vllm_left() -> Iterator[None]:
    assert vllm_processes() == [], "a vLLM from before the test still runs"
    yield
    left = vllm_processes()
    for p in left:  # do not let one test's leftovers fail the next
        p.kill()
    assert left == [], f"processes left behind: {[p.pid for p in left]}"


def test_every_mode_on_a_reused_vllm_of_its_own_with_bytes_counted_on_vllms_side(tmp_path: Path) -> None:
    """One small point of every mode at K = 1 and 2: one vLLM per mode (raw-file's with its asset
    directory), warmed before its first point and reset between points; each point's counters are
    its own, and its memory is measured above the engine's one warm baseline."""
    started: list[str] = []
    grid = Scenario(
        "vllm-modes", "every mode at K = 1, 2", {**SMALL, "mode": list(MODES), "rollouts": [1, 2]}
    )
    points = run_sweep(
        grid, tmp_path / "out", HarnessOptions(engine=Vllm()), on_engine_start=started.append
    ).points
    assert len(started) == len(MODES)  # one per engine configuration and mode
    by_point = {(r.config.mode, r.config.rollouts): r for r in points}
    for (mode, k), r in by_point.items():
        assert r.status == "ok", (mode, k, r.cause)
        assert r.engine.kind == VLLM and r.engine.version and r.engine.warmed, (mode, k)
        assert r.engine.flags is not None and "--enable-scale-out" in r.engine.flags
        # counted from the point's start, not the engine's: what this point's client sent, as vLLM's
        # API server received it
        assert r.traffic.bytes_shipped == r.engine.figures.bytes_received, (mode, k)
        assert r.engine.figures.status_counts == f"200:{r.traffic.requests}", (mode, k)
        assert r.engine.figures.rss_baseline_bytes and r.engine.figures.peak_rss_bytes
        assert r.engine.figures.peak_rss_bytes >= r.engine.figures.rss_baseline_bytes > 1 << 30  # ~4 GiB idle
        # the tree was read: its API server, engine core and worker each have a peak of their own
        kinds = r.engine.figures.processes or {}
        assert all(kinds[k].peak_rss_bytes for k in ("api_server", "engine_core", "worker")), kinds
        assert r.engine.figures.cpu_s is not None and r.engine.figures.cpu_s > 0
        assert r.traffic.wrong_results is None  # vLLM returns no checksums: unknown, never 0
    # each engine counts the points it served before each one, in ascending load: K = 1, then 2;
    # the second point's baseline is its engine's, read before the first
    for mode in MODES:
        first, second = by_point[(mode, 1)], by_point[(mode, 2)]
        assert (first.engine.reused, second.engine.reused) == (0, 1), mode
        assert first.engine.figures.rss_baseline_bytes == second.engine.figures.rss_baseline_bytes, mode
        assert second.engine.figures.rss_start_bytes is not None, mode
    hash_only = by_point[("hash-only", 1)]
    assert hash_only.traffic.null_items_sent == 1 and hash_only.traffic.fallbacks == 0
    # vLLM's cache counters count the requests it preprocesses (raw media), not `features`; the
    # warm-up's are not the point's (reset, and counted from the point's start)
    raw = by_point[("raw", 1)].engine.figures
    assert raw.mm_cache_queries == 3 and raw.cache_hits == 1
    assert by_point[("full", 1)].engine.figures.mm_cache_queries == 0


def test_each_crash_case_of_the_compat_matrix(tmp_path: Path) -> None:
    setups = choose_setups(["vllm-cache-0", "vllm-shm", "vllm-api-servers-2"])
    result = run_compat(tmp_path / "compat", setups, ("hash-only",), Vllm())
    verdicts = {c.setup: c for c in result.cells}
    assert set(verdicts) == {s.name for s in setups}
    for name, cell in verdicts.items():
        assert cell.verdict in (DIES, FALLS_BACK, WORKS), (name, cell.detail)
        assert cell.verdict == DIES, (name, cell.verdict, cell.detail)
        assert "EngineDeadError" in cell.detail or "AssertionError" in cell.detail, cell.detail


runner = CliRunner()
POINT = ["run", "--engine", "vllm", "-k", "1", "--turns", "1", "--image-size", "256"]


def _one_line_exit_2(args: list[str]) -> str:
    out = runner.invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    return lines[0]


def test_a_bad_engine_model_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in _one_line_exit_2(["run", "--engine", "vllm", "--engine-model", str(empty)])
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "config.json").write_text('{"architectures": ["NoSuchModelForAnything"], "model_type": "nope"}')
    line = _one_line_exit_2([*POINT, "--engine-model", str(bogus)])
    assert "vLLM exited with code" in line and "before it was ready" in line


def test_a_vllm_that_is_not_ready_in_time_is_a_one_line_error(tmp_path: Path) -> None:
    line = _one_line_exit_2([*POINT, "--engine-ready-timeout", "2"])
    assert "vLLM was not ready within 2 s" in line
