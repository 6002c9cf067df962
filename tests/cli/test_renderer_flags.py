"""--renderer and --tokenizer at the command line: one line and exit 2 for bad input, before any
point runs and without writing anything (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench import backends
from mmbench.cli import app

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_shows_the_renderer_flags() -> None:
    text = invoke("run", "--help").stdout
    assert "--renderer" in text and "--tokenizer" in text


def test_an_unknown_renderer_is_one_line() -> None:
    out = invoke("run", "--renderer", "vllm")
    assert out.exit_code == 2
    assert out.stderr.strip() == "mmbench: error: unknown renderer 'vllm'; choose one of: sim, renderers"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_missing_tokenizer_directory_is_one_line_and_nothing_is_written(
    command: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no-tokenizer"
    args = [command, "--renderer", "renderers", "--tokenizer", str(missing), "-k", "1", "--turns", "1"]
    args += ["--json", str(tmp_path / "p.json")] if command == "run" else ["--out", str(tmp_path / "out")]
    out = invoke(*args)
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such directory" in lines[0] and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_without_the_library_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(backends, "missing_modules", lambda: ("renderers", "transformers"))
    out = invoke(
        "sweep", "--renderer", "renderers", "--rollouts", "1", "--turns", "1", "--out", str(tmp_path / "o")
    )
    assert out.exit_code == 2
    assert "pip install 'mmbench[renderers]'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
