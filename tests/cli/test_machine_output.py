"""Every command's machine-readable output (--format json, csv, markdown) is stdout alone, so that
`| jq`, `json.load` and `> report.md` take it whole: its human lines (progress, where the results
are, regressions) go to stderr. The inputs are the results committed under results/."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench.analysis.compare import compare
from mmbench.analysis.engine_fidelity import engine_rows
from mmbench.analysis.plan import plan
from mmbench.analysis.report import build_report
from mmbench.cli import app
from mmbench.config import PointConfig
from mmbench.reporters.compare_report import compare_markdown
from mmbench.reporters.engine_fidelity_report import engine_markdown
from mmbench.reporters.markdown import render_markdown
from mmbench.reporters.plan_report import render_markdown as plan_markdown
from mmbench.results import load
from mmbench.units import GIB, MIB

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "results" / "ci-baseline"
HEAD = ROOT / "results" / "calibration" / "ci-1"
EMBEDDED = ROOT / "results" / "calibration" / "engine-fidelity"
VLLM = ROOT / "results" / "calibration" / "engine-fidelity-vllm"
runner = CliRunner()

# A command's arguments before --format, for each command that has a machine format.
REPORT = ("report", str(BASELINE))
COMPARE = ("compare", str(BASELINE), str(HEAD), "--metric", "retained", "--threshold", "10",
           "--min-change", "2MiB")  # fmt: skip
FIDELITY = ("fidelity", str(EMBEDDED), str(VLLM))
PLAN = ("plan", "--memory", "8GiB")


def stdout_of(*args: str) -> str:
    out = runner.invoke(app, list(args))
    assert out.exit_code in (0, 1), out.output  # compare exits 1 on a regression, its output whole
    return out.stdout


def one_csv_table(text: str) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) > 1 and {len(r) for r in rows} == {len(rows[0])}, text[-300:]


@pytest.mark.parametrize("args", [REPORT, FIDELITY, PLAN], ids=lambda a: a[0])
def test_json_is_stdout_alone(args: tuple[str, ...]) -> None:
    json.loads(stdout_of(*args, "--format", "json"))  # anything after the document fails to parse


def test_csv_is_stdout_alone() -> None:
    one_csv_table(stdout_of(*REPORT, "--format", "csv"))


# The markdown a command prints is exactly what its reporter renders: nothing before or after.
MARKDOWN: dict[str, tuple[tuple[str, ...], Callable[[], str]]] = {
    "report": (REPORT, lambda: render_markdown(build_report(load(BASELINE), "live"))),
    "compare": (
        COMPARE,
        lambda: compare_markdown(compare(load(BASELINE), load(HEAD), "retained", 10.0, 2 * MIB)),
    ),
    "fidelity": (FIDELITY, lambda: engine_markdown(engine_rows(load(EMBEDDED), load(VLLM)))),
    "plan": (PLAN, lambda: plan_markdown(plan(PointConfig(), 8 * GIB, None, engine="embedded"))),
}


@pytest.mark.parametrize("command", list(MARKDOWN))
def test_markdown_is_stdout_alone(command: str) -> None:
    args, expected = MARKDOWN[command]
    assert stdout_of(*args, "--format", "markdown") == expected()


@pytest.mark.slow
def test_plan_measure_prints_its_document_alone_and_where_the_results_are_on_stderr(tmp_path: Path) -> None:
    # The cheap search of test_plan_measure_cli; the second run reuses its points.
    point = ("--memory", "400MiB", "--image-size", "256", "--turns", "2", "--mode", "hash-only")
    args = ["plan", "--measure", *point, "--out", str(tmp_path)]
    for fmt in ("json", "markdown"):
        out = runner.invoke(app, [*args, "--format", fmt])
        assert out.exit_code == 0, out.output
        if fmt == "json":
            json.loads(out.stdout)
        else:
            assert out.stdout.startswith("## ") and "results:" not in out.stdout, out.stdout
        assert f"results: {tmp_path / 'results.json'}" in out.stderr
