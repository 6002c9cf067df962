"""The command line through Typer's CliRunner: help, bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.rich_utils
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.transports import MODES

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_commands_and_modes() -> None:
    out = invoke("--help")
    assert out.exit_code == 0
    for cmd in ("run", "sweep", "scenarios"):
        assert cmd in out.stdout
    run_help = invoke("run", "--help").stdout
    for mode in MODES:
        assert mode in run_help
    flags = ["--rollouts", "--turns", "--images-per-turn", "--image-size", "--model", "--image-format"]
    flags += ["--content", "--pool-size", "--image-cache-max", "--engine-cache-gb", "--seed", "--json"]
    for flag in flags:
        assert flag in run_help, flag
    sweep_help = invoke("sweep", "--help").stdout
    for flag in ("--repeats", "--out", "--modes"):
        assert flag in sweep_help


SENTENCE_END = (".", "?", "!")
# A panel row that carries on the one above: its first column (the name) is blank.
CONTINUED = re.compile(r"^│\s{8,}\S")


def test_help_reads_in_whole_sentences(monkeypatch: pytest.MonkeyPatch) -> None:
    # So wide that rich wraps nothing: a line that ends mid-sentence was broken by the help text itself.
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 1000)
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    top = invoke("--help").stdout
    panel = top[top.index("╭─ Commands") :].partition("╰")[0].splitlines()[1:]
    assert [row.split()[1] for row in panel] == list(commands)  # a row per command, none carried on
    for row in panel:
        assert row.strip("│ ").endswith(SENTENCE_END), row
    for name, command in commands.items():
        short = command.get_short_help_str()  # the command list in docs/cli.md, cut at 45 characters
        assert short.endswith(SENTENCE_END) and not short.endswith("...") and "\n" not in short, name
        text = invoke(name, "--help").stdout
        lines = text.splitlines()
        description = lines[2 : next(i for i, line in enumerate(lines) if line.startswith("╭"))]
        paragraphs = [line.strip() for line in description if line.strip()]
        assert paragraphs and all(p.endswith(SENTENCE_END) for p in paragraphs), text
        assert not [line for line in lines if CONTINUED.match(line)], text


def test_version() -> None:
    out = invoke("--version")
    assert out.exit_code == 0 and out.stdout.startswith("mmbench ")


BAD_RUN = [
    (["--mode", "nope"], "unknown mode 'nope'"),
    (["--rollouts", "0"], "rollouts must be between 1"),
    (["--rollouts", "x"], "--rollouts: 'x' is not an integer"),
    (["--rollouts", "1,2"], "one value for a single point"),
    (["--turns", "-1"], "turns must be between 1"),
    (["--image-size", "0"], "must be > 0"),
    (["--image-size", "1x300"], "aspect ratio"),
    (["--image-size", "99999"], "beyond the supported"),
    (["--image-size", "abc"], "is not a side"),
    (["--model", "llava"], "unknown model 'llava'"),
    (["--content", "cats"], "unknown content"),
    (["--image-format", "gif"], "unknown image_format"),
    (["--engine-cache-gb", "-1"], "engine_cache_gb must be >= 0"),
    (["--codec", "msgpack"], "unknown codec"),
]


@pytest.mark.parametrize(("args", "message"), BAD_RUN)
def test_run_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = invoke("run", *args, "--json", str(tmp_path / "p.json"))
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mmbench: error: ")
    assert message in lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []


BAD_SCENARIOS = [
    ("version = 2\ndescription = 'x'\n", "version must be 1"),
    ("description = 'x'\n", "version must be 1"),
    ("version = 1\n", "description must be a non-empty string"),
    ("version = 1\ndescription = 'x'\nrollout = [1]\n", "unknown key 'rollout'; known keys:"),
    ("version = 1\ndescription = 'x'\nrollouts = []\n", "empty list"),
    ("version = 1\ndescription = 'x'\nrollouts = ['a']\n", "rollouts must be int"),
    ("version = 1\ndescription = 'x'\nmode = ['full', 'x']\n", "unknown mode 'x'"),
    ("version = 1\ndescription = 'x'\nrepeats = 0\n", "repeats must be an integer"),
    ("version = 1\ndescription = 'x'\nrollouts = [1, 1]\n", "lists a value twice"),
    ("version = 1\ndescription = \n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SCENARIOS)
def test_sweep_bad_scenario_is_one_line_exit_2(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out_dir = tmp_path / "out"
    out = invoke("sweep", str(path), "--out", str(out_dir))
    assert out.exit_code == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not out_dir.exists()


def test_sweep_unknown_scenario_lists_known_ones(tmp_path: Path) -> None:
    out = invoke("sweep", "no-such-scenario", "--out", str(tmp_path / "o"))
    assert out.exit_code == 2
    assert "unknown scenario 'no-such-scenario'; known:" in out.stderr
    assert "default" in out.stderr and "ci" in out.stderr


def test_sweep_bad_flag_value(tmp_path: Path) -> None:
    out = invoke("sweep", "ci", "--rollouts", "1,zero", "--out", str(tmp_path / "o"))
    assert out.exit_code == 2 and "--rollouts: 'zero' is not an integer" in out.stderr
    assert not (tmp_path / "o").exists()


def test_sweep_unknown_start_method_is_one_line_exit_2(tmp_path: Path) -> None:
    out = invoke("sweep", "ci", "--start-method", "spawn", "--out", str(tmp_path / "o"))
    assert out.exit_code == 2
    assert out.stderr == "mmbench: error: unknown start method 'spawn'; choose one of: fork, exec\n"
    assert not (tmp_path / "o").exists()


def test_sweep_refuses_an_out_dir_with_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    out = invoke("sweep", "ci", "--out", str(tmp_path))
    assert out.exit_code == 2 and "already holds results" in out.stderr


def test_scenarios_lists_the_bundled_ones() -> None:
    out = invoke("scenarios")
    assert out.exit_code == 0
    assert "default" in out.stdout and "ci" in out.stdout


def test_run_refuses_a_point_that_cannot_fit_at_once_touching_nothing(tmp_path: Path) -> None:
    import time

    target = tmp_path / "p.json"
    t0 = time.perf_counter()
    out = invoke("run", "--mode", "full", "--image-size", "2048", "--rollouts", "256", "--json", str(target))
    elapsed = time.perf_counter() - t0
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "predicted" in lines[0] and "> available" in lines[0] and "--force" in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert elapsed < 10  # preflight samples nothing and starts no process (the issue asks < 2 s; CI is noisy)
