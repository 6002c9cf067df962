"""The real-engine tier (make test-vllm): mmbench starts, measures and stops a real vLLM.

Needs the vLLM environment (`make vllm`; MMBENCH_VLLM_PYTHON names it, as make test-vllm sets it).
Each vLLM takes ~40 s to start here, so the tier is a handful of points: one small point of every
mode (each started, asked until ready, measured as a process tree and stopped; no process may be
left after any test), each crash case of the compatibility matrix on a fresh engine, and the
one-line errors of a bad model directory and of a vLLM that never becomes ready.
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


def test_a_reused_vllm_serves_the_points_that_share_its_configuration(tmp_path: Path) -> None:
    """--reuse-engine: one vLLM for full at K = 1, 2 and one for raw-file (its own asset directory),
    reset between points; each point's counters are its own."""
    grid = {**SMALL, "mode": ["full", "raw-file"], "rollouts": [1, 2]}
    started: list[str] = []
    results = run_sweep(
        Scenario("reuse", "two engines, two points each", grid), tmp_path / "out",
        HarnessOptions(engine=Vllm()), reuse_engine=True, on_engine_start=started.append,
    )  # fmt: skip
    assert len(started) == 2
    assert [(r.config.mode, r.config.rollouts, r.engine.reused) for r in results.points] == [
        ("full", 1, 0), ("full", 2, 1), ("raw-file", 1, 0), ("raw-file", 2, 1),
    ]  # fmt: skip
    for r in results.points:
        assert r.status == "ok" and r.traffic.wrong_results is None, r.cause
        # counted from the point's start, not the engine's: what this point's client sent
        assert r.engine.figures.bytes_received == r.traffic.bytes_shipped
        assert r.engine.figures.status_counts == f"200:{r.traffic.requests}"
        assert r.engine.figures.rss_baseline_bytes and r.engine.figures.peak_rss_bytes


def test_one_point_of_every_mode_with_bytes_counted_on_vllms_side(tmp_path: Path) -> None:
    scenario = Scenario("vllm-modes", "one small point per mode", {"mode": list(MODES), **SMALL})
    results = run_sweep(scenario, tmp_path / "out", HarnessOptions(engine=Vllm()))
    by_mode = {r.config.mode: r for r in results.points}
    assert set(by_mode) == set(MODES)
    for mode, r in by_mode.items():
        assert r.status == "ok", (mode, r.cause)
        assert r.engine.kind == VLLM and r.engine.version
        assert r.engine.flags is not None and "--enable-scale-out" in r.engine.flags
        assert r.traffic.bytes_shipped == r.engine.figures.bytes_received, (
            mode
        )  # what vLLM's API server received
        assert r.engine.figures.rss_baseline_bytes and r.engine.figures.peak_rss_bytes
        assert (
            r.engine.figures.peak_rss_bytes >= r.engine.figures.rss_baseline_bytes > 1 << 30
        )  # ~4 GiB idle here
        # the tree was read: its API server, engine core and worker each have a peak of their own
        kinds = r.engine.figures.processes or {}
        assert all(kinds[k].peak_rss_bytes for k in ("api_server", "engine_core", "worker")), kinds
        assert r.engine.figures.cpu_s is not None and r.engine.figures.cpu_s > 0
        assert r.engine.figures.status_counts == "200:2", (mode, r.engine.figures.status_counts)
        assert r.traffic.wrong_results is None  # vLLM returns no checksums: unknown, never 0
    assert by_mode["hash-only"].traffic.null_items_sent == 1 and by_mode["hash-only"].traffic.fallbacks == 0
    # vLLM's cache counters count the requests it preprocesses (raw media), not `features`
    assert (
        by_mode["raw"].engine.figures.mm_cache_queries == 3 and by_mode["raw"].engine.figures.cache_hits == 1
    )
    assert by_mode["full"].engine.figures.mm_cache_queries == 0


def test_each_crash_case_of_the_matrix_on_a_fresh_engine(tmp_path: Path) -> None:
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
