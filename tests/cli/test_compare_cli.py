"""`mmbench compare` through CliRunner: exit codes 0/1/2, one stderr line per error, both formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from mmbench import results
from mmbench.cli.compare import compare
from mmbench.config import PointConfig
from mmbench.results import ResultsFile
from tests.helpers import flat_record

MIB = 1024**2

# Mounted here on its own: cli/__init__.py is the lead's to change.
app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command()(compare)
runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(directory: Path, lives: dict[tuple[str, int], list[float]]) -> Path:
    """A results directory with one record per (mode, K) and repeat."""
    points = [
        flat_record(
            **PointConfig(mode=mode, rollouts=k).to_dict(),
            repeat=i,
            status="ok",
            retained_live_bytes=int(v),
            retained_bytes=int(v * 2),
            peak_bytes=int(v * 3),
            bytes_shipped=1000,
        )
        for (mode, k), values in lives.items()
        for i, v in enumerate(values)
    ]
    results.save(directory, ResultsFile({"python": "3.11"}, {"name": "hand-made"}, points))
    return directory


def base_and_head(tmp_path: Path, factor: float, repeats: int = 1) -> tuple[Path, Path]:
    jitter = [0.0, 0.5 * MIB, -0.5 * MIB][:repeats]
    grid = [("full", 1), ("full", 2), ("hash-only", 1), ("hash-only", 2)]
    base = write(tmp_path / "base", {p: [100 * MIB * p[1] + j for j in jitter] for p in grid})
    head = write(tmp_path / "head", {p: [factor * 100 * MIB * p[1] + j for j in jitter] for p in grid})
    return base, head


def assert_one_error_line(out: Result, message: str) -> None:
    assert out.exit_code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mmbench: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("repeats", [1, 3])
def test_twenty_percent_more_retained_exits_1(tmp_path: Path, repeats: int) -> None:
    base, head = base_and_head(tmp_path, 1.2, repeats)
    out = invoke(base, head)
    assert out.exit_code == 1, out.stdout + out.stderr
    assert "4 points compared, 4 regressions over 10 %" in out.stdout
    assert out.stderr.strip().splitlines() == ["mmbench: 4 regressions over 10 % in retained (see the table)"]


def test_identical_exits_0_and_accepts_a_results_json(tmp_path: Path) -> None:
    base, _ = base_and_head(tmp_path, 1.0)
    out = invoke(base, base / "results.json")
    assert out.exit_code == 0, out.stderr
    assert out.stderr == ""
    assert "0 regressions" in out.stdout


def test_five_percent_passes_the_default_threshold_but_not_a_lower_one(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.05)
    assert invoke(base, head).exit_code == 0
    assert invoke(base, head, "--threshold", "4%").exit_code == 1
    assert invoke(base, head, "--threshold", "4").exit_code == 1


def test_a_higher_threshold_lets_twenty_percent_through(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.2)
    assert invoke(base, head, "--threshold", "25%").exit_code == 0


def test_a_decrease_exits_0(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 0.5, repeats=3)
    assert invoke(base, head, "--threshold", "0").exit_code == 0


def test_markdown_output(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.2)
    out = invoke(base, head, "--format", "markdown")
    assert out.exit_code == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("**mmbench compare**: 4 points compared, 4 regressions over 10 %")
    assert "| point | base MiB | head MiB | change | p | significant | verdict |" in lines
    assert "| full K=1 | 100.0 | 120.0 | +20.0 % | - | n/a | ❌ |" in lines


def test_slope_metric(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.0)
    # full: 100 MiB per rollout in base, 150 in head; hash-only unchanged
    lives: dict[tuple[str, int], list[float]] = {("full", 1): [100 * MIB], ("full", 2): [250 * MIB]}
    write(head, {**lives, ("hash-only", 1): [100 * MIB], ("hash-only", 2): [200 * MIB]})
    out = invoke(base, head, "--metric", "slope", "--format", "markdown")
    assert out.exit_code == 1, out.stdout + out.stderr
    assert "2 slopes compared, 1 regression over 10 %" in out.stdout
    assert "| slope full (per rollout) | 100.00 | 150.00 | +50.0 % | - | n/a | ❌ |" in out.stdout


# --- unusable input: exit 2, one line ------------------------------------------------------------


def test_corrupt_json(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.0)
    text = (head / "results.json").read_text()
    (head / "results.json").write_text(text[: len(text) // 2])
    assert_one_error_line(invoke(base, head), "not valid JSON")


def test_missing_path(tmp_path: Path) -> None:
    base, _ = base_and_head(tmp_path, 1.0)
    assert_one_error_line(invoke(base, tmp_path / "nope"), "no results here")


def test_schema_version_99(tmp_path: Path) -> None:
    base, head = base_and_head(tmp_path, 1.0)
    data = json.loads((head / "results.json").read_text())
    data["schema_version"] = 99
    (head / "results.json").write_text(json.dumps(data))
    assert_one_error_line(invoke(base, head), "schema_version 99 is not supported")


def test_nothing_in_common(tmp_path: Path) -> None:
    base = write(tmp_path / "base", {("full", 1): [MIB]})
    head = write(tmp_path / "head", {("full", 4): [MIB]})
    assert_one_error_line(invoke(base, head), "no point in common")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "rss"], "unknown metric 'rss'; choose one of: retained, retained_raw, peak"),
        (["--format", "html"], "unknown format 'html'; choose one of: table, markdown"),
        (["--threshold=-5"], "--threshold: '-5' is not a percentage >= 0"),
        (["--threshold", "ten"], "--threshold: 'ten' is not a percentage >= 0"),
        (["--threshold", "nan%"], "is not a percentage"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    base, head = base_and_head(tmp_path, 1.0)
    assert_one_error_line(invoke(base, head, *args), message)


def test_help_is_the_docstring() -> None:
    out = invoke("--help")
    assert out.exit_code == 0
    assert "Compare HEAD against BASE point by point" in out.stdout
    for word in ("--metric", "--threshold", "--format", "slope"):
        assert word in out.stdout


def test_min_change_keeps_tiny_points_below_the_rss_noise_floor(tmp_path: Path) -> None:
    # +20 % of 1 MiB is 0.2 MiB: within the ~2 MiB floor of RSS deltas, so not a regression...
    base = write(tmp_path / "base", {("full", 1): [1 * MIB]})
    head = write(tmp_path / "head", {("full", 1): [1.2 * MIB]})
    assert invoke(base, head).exit_code == 0
    # ...unless the floor is lowered
    assert invoke(base, head, "--min-change", "0").exit_code == 1
    assert_one_error_line(invoke(base, head, "--min-change", "lots"), "--min-change")
