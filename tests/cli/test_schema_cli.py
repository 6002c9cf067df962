"""Results of schema 5 (flat) and schema 6 (nested) side by side through the commands users run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.results import RESULTS_JSON, load, save

# a committed `mmbench sweep ci` run written by schema 5
BASELINE = Path(__file__).resolve().parents[2] / "results" / "calibration" / "ci-7"


def test_the_committed_baseline_is_a_v5_file() -> None:
    assert (
        json.loads((BASELINE / RESULTS_JSON).read_text())["schema_version"] == 5
    )  # what the tests below mix


def test_compare_takes_a_v5_base_and_a_v6_head(tmp_path: Path) -> None:
    head = load(BASELINE)
    save(tmp_path / "v6", head)
    assert json.loads((tmp_path / "v6" / RESULTS_JSON).read_text())["schema_version"] == 6
    result = CliRunner().invoke(app, ["compare", str(BASELINE), str(tmp_path / "v6")])
    assert result.exit_code == 0, result.output
    assert f"{len(head.points)} points compared, 0 regressions" in result.output


def test_compare_sees_a_regression_across_the_schemas(tmp_path: Path) -> None:
    """The v6 head's retained (live) figures 20 % up from the v5 base's: the gate fails (exit 1)."""
    base = load(BASELINE)
    worse = [
        replace(
            p, client=replace(p.client, retained_live_bytes=int((p.client.retained_live_bytes or 0) * 1.2))
        )
        for p in base.points
    ]
    save(tmp_path / "v6", replace(base, points=worse))
    result = CliRunner().invoke(app, ["compare", str(BASELINE), str(tmp_path / "v6")])
    assert result.exit_code == 1, result.output
