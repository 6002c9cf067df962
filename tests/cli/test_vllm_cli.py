"""--engine vllm, mmbench engine --vllm and mmbench compat on the command line, without a vLLM: every
bad combination is one line on stderr, exit 2, and nothing written (the real engine: tests/vllm)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench.cli import app

runner = CliRunner()
NO_VLLM = "/nonexistent/.venv-vllm/bin/python"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--engine", "vlm"], "unknown engine 'vlm'; choose one of: embedded, vllm"),
        (["run", "--engine-arg=--max-num-seqs=8"], "are flags of a real vLLM; add --engine vllm"),
        (["run", "--engine-model", "/tmp"], "--engine-model is an option of --engine vllm"),
        (["run", "--vllm-python", sys.executable], "--vllm-python is an option of --engine vllm"),
        (["run", "--engine", "vllm", "--vllm-python", NO_VLLM], "is not an executable file; run `make vllm`"),
        (["run", "--engine", "vllm", "--vllm-python", sys.executable], "has no vLLM installed"),
        (["run", "--engine", "vllm", "--engine-ready-timeout", "0"], "--engine-ready-timeout must be"),
        (["run", "--engine", "vllm", "--engine-arg", "--port 9"], "mmbench sets --port itself"),
        (["run", "--engine", "vllm", "--engine-arg", "'unclosed"], "cannot be split as shell words"),
        (["run", "--engine", "vllm", "--engine-error-rate", "0.5", "--vllm-python", sys.executable],
         "need the embedded engine"),
        (["run", "--engine", "vllm", "--engine-url", "http://127.0.0.1:9"], "do not go together"),
        (["run", "--engine", "vllm", "--codec", "fast"], "vLLM decodes only its own"),
        (["sweep", "--engine", "vllm", "--codec", "stdlib", "--modes", "raw,full", "-k", "1"], "not stdlib"),
        (["sweep", "--engine", "vllm", "--cluster", "local:1", "--vllm-python", sys.executable, "-k", "1"],
         "--engine vllm and --cluster do not go together"),
        (["engine", "--engine-arg", "--max-num-seqs 2"], "is an option of mmbench engine --vllm; add --vllm"),
        (["engine", "--vllm", "--vllm-python", NO_VLLM], "run `make vllm`"),
        (["compat", "--setups", "vllm-gpu"], "unknown engine setup 'vllm-gpu'"),
        (["compat", "--setups", "embedded", "--modes", "fast"], "unknown mode 'fast'"),
    ],
)  # fmt: skip
def test_bad_engine_input_is_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .venv-vllm here
    monkeypatch.delenv("MMBENCH_VLLM_PYTHON", raising=False)
    out = runner.invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_scenario_may_name_its_engine_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\ndescription = "x"\nengine = "tgi"\nrollouts = 1\n')
    out = runner.invoke(app, ["sweep", str(bad), "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert out.exit_code == 2 and "engine must be one of embedded, vllm, got 'tgi'" in out.stderr
    good = tmp_path / "good.toml"
    good.write_text('version = 1\ndescription = "x"\nengine = "vllm"\nrollouts = 1\n')
    out = runner.invoke(app, ["sweep", str(good), "--vllm-python", sys.executable], catch_exceptions=False)
    assert out.exit_code == 2 and "has no vLLM installed" in out.stderr  # the scenario asked for vLLM
