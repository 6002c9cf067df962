"""`mmbench plan --measure` through the CLI: a real search through the harness, kept and reused."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.results import load, read_points_log

runner = CliRunner()
# Small enough that a handful of points decide it: 400 MiB holds a few hash-only rollouts here (300
# did not always hold one under the suite's load).
POINT = ("--memory", "400MiB", "--image-size", "256", "--turns", "2", "--mode", "hash-only")


def test_a_measured_search_finds_its_k_keeps_its_points_and_reuses_them(tmp_path: Path) -> None:
    out = tmp_path / "capacity"
    first = runner.invoke(app, ["plan", "--measure", *POINT, "--out", str(out), "--format", "json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)  # the JSON alone: its results line is on stderr
    (mode,) = data["modes"]
    k = mode["measured_rollouts"]
    assert k >= 1 and mode["model_rollouts"] == mode["plan"]["rollouts"]
    probes = {p["rollouts"]: p for p in mode["probes"]}
    assert probes[k]["fits"] and probes[k]["system_peak_bytes"] <= 400 * 1024**2
    assert not probes[k + 1]["fits"]  # the search ends on the K above that did not fit
    assert sorted(r.config.rollouts for r in read_points_log(out)) == sorted(probes)
    assert load(out).scenario["memory_bytes"] == 400 * 1024**2  # a results directory, reportable
    again = runner.invoke(app, ["plan", "--measure", *POINT, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("measured before") == len(probes)
    assert "measured K" in again.stdout
    other = runner.invoke(app, ["plan", "--measure", *POINT, "--out", str(out), "--turns", "3"])
    assert other.exit_code == 2 and "holds points of another search" in other.stderr


def test_bad_measure_input_is_one_line_and_exit_2() -> None:
    for args, message in (
        (["plan", "--out", "x", "--memory", "1GiB"], "add --measure"),
        (["plan", "--measure", "--memory", "1000TiB"], "more than this machine has available"),
        (["plan", "--measure", "--engine", "nope"], "engine"),
    ):
        out = runner.invoke(app, args)
        lines = out.stderr.strip().splitlines()
        assert out.exit_code == 2 and len(lines) == 1 and message in lines[0], out.output
