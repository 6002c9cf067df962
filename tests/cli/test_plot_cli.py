"""`mmbench plot` through Typer's CliRunner: the files it prints, and bad input as one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from mmbench.cli.plot import plot
from mmbench.results import ResultsFile, save
from tests.unit.test_plot import results, standard

# Mounted here rather than through mmbench.cli.app, which the lead wires up.
app = typer.Typer()
app.command()(plot)
runner = CliRunner()
NAMES = ["retained-vs-k", "shipped-per-rollout", "shipped-per-turn", "peak-vs-retained"]


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def written(tmp_path: Path, data: ResultsFile | None = None) -> Path:
    directory = tmp_path / "run"
    save(directory, data or standard())
    return directory


def assert_one_line_error(out: Result, message: str) -> None:
    assert out.exit_code == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mmbench: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout == ""


def test_plots_into_results_dir_plots_and_prints_the_paths(tmp_path: Path) -> None:
    directory = written(tmp_path)
    out = invoke(str(directory))
    assert out.exit_code == 0, out.stderr
    printed = out.stdout.splitlines()
    assert printed == [str(directory / "plots" / f"{n}.png") for n in NAMES]
    for line in printed:
        assert Path(line).read_bytes().startswith(b"\x89PNG")


def test_out_and_svg(tmp_path: Path) -> None:
    directory = written(tmp_path)
    target = tmp_path / "figs"
    out = invoke(str(directory), "--out", str(target), "--format", "svg")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.splitlines() == [str(target / f"{n}.svg") for n in NAMES]
    assert all(Path(p).read_text().startswith(("<?xml", "<svg")) for p in out.stdout.splitlines())
    assert not (directory / "plots").exists()


def test_a_results_json_path_plots_next_to_it(tmp_path: Path) -> None:
    directory = written(tmp_path)
    out = invoke(str(directory / "results.json"))
    assert out.exit_code == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(directory / "plots" / "retained-vs-k.png")


def test_unknown_format_is_exit_2_listing_the_formats(tmp_path: Path) -> None:
    directory = written(tmp_path)
    assert_one_line_error(invoke(str(directory), "--format", "jpg"), "choose one of: png, svg")
    assert not (directory / "plots").exists()


def test_missing_results_is_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(invoke(str(tmp_path / "nope")), "no results here")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("{}", "not an mmbench results file"),
        ('{"schema_version": 99, "points": []}', "schema_version 99 is not supported"),
        ('{"schema_version": 1, "points": [{"mode": "full"}]}', "missing field"),
    ],
)
def test_corrupt_results_are_exit_2(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "results.json").write_text(text)
    assert_one_line_error(invoke(str(tmp_path)), message)
    assert not (tmp_path / "plots").exists()


def test_results_without_measured_points_are_exit_2_writing_nothing(tmp_path: Path) -> None:
    from tests.unit.test_plot import rec

    directory = written(tmp_path, results([rec("full", 1, status="failed")]))
    assert_one_line_error(invoke(str(directory)), f"no measured points to plot in {directory}")
    assert not (directory / "plots").exists()


def test_help_is_the_docstring_and_lists_the_formats() -> None:
    from mmbench.reporters.plot import FORMATS

    out = invoke("--help")
    assert out.exit_code == 0
    assert "Draw a results directory's figures: retained memory, bytes shipped" in out.stdout
    assert all(f in out.stdout for f in FORMATS)


def test_importing_the_command_does_not_import_matplotlib() -> None:
    # cli/__init__ imports every command: `mmbench --help` must not pay for matplotlib.
    code = "import sys, mmbench.cli.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
