"""The committed baseline: a fresh run of scenarios/ci.toml must not regress against it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.results import load

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "results" / "ci-baseline"


def _sweep(runner: CliRunner, out: Path) -> Path:
    sweep = runner.invoke(app, ["sweep", str(ROOT / "scenarios" / "ci.toml"), "--out", str(out)])
    assert sweep.exit_code == 0, sweep.stderr
    return out


def test_a_fresh_ci_sweep_matches_the_committed_baseline(tmp_path: Path) -> None:
    baseline = load(BASELINE)
    assert baseline.scenario["name"] == "ci" and all(p.ok for p in baseline.points)
    runner = CliRunner()
    out = _sweep(runner, tmp_path / "head")
    head = load(out)
    assert [p.key() for p in head.points] == [p.key() for p in baseline.points]
    assert all(p.traffic.wrong_results == 0 for p in head.points)
    for metric in ("retained", "bytes_shipped"):
        result = runner.invoke(app, ["compare", str(BASELINE), str(out), "--metric", metric])
        if result.exit_code == 1 and metric == "retained":
            # One repeat per point: a regression must show again in a second sweep. Under load
            # (this suite runs in parallel) about 1 retained (live) reading in 30 of a K=1 point
            # sits ~11 MiB high (memory the trim did not return; the released reading after it
            # is back at the baseline), so a single reading cannot tell it from a real change.
            again = _sweep(runner, tmp_path / "again")
            result = runner.invoke(app, ["compare", str(BASELINE), str(again), "--metric", metric])
        assert result.exit_code == 0, f"{metric}:\n{result.stdout}\n{result.stderr}"
    # bytes shipped is deterministic: the same to the byte
    assert [p.traffic.bytes_shipped for p in head.points] == [
        p.traffic.bytes_shipped for p in baseline.points
    ]
