"""`mmbench sweep --cluster` on bad input: one line, exit 2, nothing started or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench.cli import app


@pytest.mark.parametrize("cluster", ["local:0", "local:two", "scheduler:8786", "missing-scheduler.json"])
def test_a_bad_cluster_is_one_line_and_nothing_is_written(tmp_path: Path, cluster: str) -> None:
    out = tmp_path / "out"
    args = ["sweep", "ci", "--cluster", cluster, "--out", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mmbench: error: --cluster")
    assert not out.exists()


def test_sweep_help_names_the_cluster_forms() -> None:
    result = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--cluster" in result.stdout and "local:N" in result.stdout and "scheduler file" in result.stdout
