"""The committed baseline: a fresh run of scenarios/ci.toml must not regress against it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.results import load

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "results" / "ci-baseline"


def test_a_fresh_ci_sweep_matches_the_committed_baseline(tmp_path: Path) -> None:
    baseline = load(BASELINE)
    assert baseline.scenario["name"] == "ci" and all(p.ok for p in baseline.points)
    runner = CliRunner()
    out = tmp_path / "head"
    sweep = runner.invoke(app, ["sweep", str(ROOT / "scenarios" / "ci.toml"), "--out", str(out)])
    assert sweep.exit_code == 0, sweep.stderr
    head = load(out)
    assert [p.key() for p in head.points] == [p.key() for p in baseline.points]
    assert all(p.wrong_results == 0 for p in head.points)
    for metric in ("retained", "bytes_shipped"):
        result = runner.invoke(app, ["compare", str(BASELINE), str(out), "--metric", metric])
        assert result.exit_code == 0, f"{metric}:\n{result.stdout}\n{result.stderr}"
    # bytes shipped is deterministic: the same to the byte
    assert [p.bytes_shipped for p in head.points] == [p.bytes_shipped for p in baseline.points]
