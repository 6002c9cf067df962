"""`mmbench report` through Typer's CliRunner: every format on a saved results directory, the
GitHub step summary, and unusable input (exit 2, one line on stderr, no traceback)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mmbench.analysis.report import build_report
from mmbench.cli.report import report
from mmbench.reporters.markdown import render_markdown
from mmbench.results import RESULTS_JSON, load, save, to_json
from tests.unit.test_report import sample_records, sample_results

# Mounted here, not through mmbench.cli.app, so that the command is tested on its own.
app = typer.Typer()
app.command()(report)
runner = CliRunner()
TITLE = "## mmbench report: golden on Test CPU"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    save(out, sample_results())
    return out


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_every_format_exits_0(results_dir: Path, fmt: str) -> None:
    out = invoke(str(results_dir), "--format", fmt)
    assert out.exit_code == 0, out.stderr
    assert out.stderr == ""
    assert "×11.4" in out.stdout or "11.4286" in out.stdout or fmt == "json"


def test_markdown_is_the_renderer_output(results_dir: Path) -> None:
    out = invoke(str(results_dir), "--format", "markdown")
    assert out.stdout == render_markdown(build_report(load(results_dir)))


def test_csv_and_json_parse(results_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(invoke(str(results_dir), "--format", "csv").stdout)))
    assert len(rows) == 8
    data = json.loads(invoke(str(results_dir), "--format", "json", "--metric", "raw").stdout)
    assert data["metric"] == "raw" and data["metric_field"] == "client.retained_bytes"


def test_table_is_the_default(results_dir: Path) -> None:
    out = invoke(str(results_dir))
    assert out.exit_code == 0
    assert "golden on Test CPU" in out.stdout and "Per mode" in out.stdout


def test_results_json_path_is_accepted(results_dir: Path) -> None:
    assert invoke(str(results_dir / RESULTS_JSON), "--format", "csv").exit_code == 0


def test_summary_appends_and_keeps_what_was_there(
    results_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        out = invoke(str(results_dir), "--format", "csv", "--summary")
        assert out.exit_code == 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "GITHUB_STEP_SUMMARY" in lines[0] and str(summary) in lines[0]
        assert out.stdout.startswith("mode,rollouts,")  # the chosen format still goes to stdout
    text = summary.read_text()
    md = render_markdown(build_report(load(results_dir)))
    assert text.count(TITLE) == 2
    assert text == md + "\n" + md


def test_summary_without_the_variable_says_so(results_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = invoke(str(results_dir), "--format", "markdown", "--summary")
    assert out.exit_code == 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "GITHUB_STEP_SUMMARY is not set" in lines[0]
    assert out.stdout.startswith(TITLE)


def _write(directory: Path, text: str | bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_JSON
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return directory


def _valid() -> str:
    return to_json(sample_results())


def _valid_dict() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_valid())
    return data


def _only_failed() -> str:
    from dataclasses import replace

    return to_json(sample_results([replace(r, status="failed", cause="signal 9") for r in sample_records()]))


BAD = {
    "corrupt": (lambda d: _write(d, b"\x00\xff\xfe not json"), "not valid JSON"),
    "truncated": (lambda d: _write(d, _valid()[: len(_valid()) // 2]), "not valid JSON"),
    "foreign": (lambda d: _write(d, json.dumps({"a": 1})), "not an mmbench results file"),
    "list": (lambda d: _write(d, "[1, 2]"), "not an mmbench results file"),
    "schema 99": (
        lambda d: _write(d, json.dumps(_valid_dict() | {"schema_version": 99})),
        "schema_version 99",
    ),
    "missing dir": (lambda d: d / "nope", "no results here"),
    "empty dir": (lambda d: (d.mkdir(), d)[1], "no results here"),
    "only failed points": (lambda d: _write(d, _only_failed()), "no ok or extrapolated points"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_unusable_input_is_one_line_exit_2(case: str, tmp_path: Path) -> None:
    make, message = BAD[case]
    target = make(tmp_path / "res")
    out = invoke(str(target), "--format", "markdown")
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mmbench: error: ") and message in lines[0], lines[0]
    assert str(target) in lines[0]  # says which input
    assert "Traceback" not in out.stdout + out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "html"], "--format: unknown value 'html'; choose one of: table, markdown, csv, json"),
        (["--metric", "peak"], "--metric: unknown value 'peak'; choose one of: live, raw"),
    ],
)
def test_unknown_format_or_metric_lists_the_valid_ones(
    results_dir: Path, args: list[str], message: str
) -> None:
    out = invoke(str(results_dir), *args)
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [f"mmbench: error: {message}"]


def test_an_unwritable_summary_is_one_line_exit_2(
    results_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-dir" / "summary.md"))
    out = invoke(str(results_dir), "--format", "csv", "--summary")
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmbench: error: GITHUB_STEP_SUMMARY=")
