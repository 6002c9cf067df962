"""CLI: --engine-url refused in one line before any point runs (nothing written); mmbench engine's
own bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.world.engine.standalone import listen, url_of

runner = CliRunner()


def closed_url() -> str:
    with listen("127.0.0.1", 0) as sock:
        return url_of(sock)  # closed once the socket is


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_unreachable_engine_is_one_line_exit_2_and_nothing_written(command: str, tmp_path: Path) -> None:
    url, out = closed_url(), tmp_path / "out"
    args = [command, "--engine-url", url, "-k", "1", "--turns", "1", "--image-size", "64"]
    args += ["--out", str(out)] if command == "sweep" else ["--json", str(out / "r.json")]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mmbench: error: the engine at {url} is not reachable")
    assert not out.exists()


def test_engine_url_with_cluster_is_refused() -> None:
    result = runner.invoke(app, ["sweep", "--engine-url", closed_url(), "--cluster", "local:1"])
    assert result.exit_code == 2 and "do not go together" in result.stderr


def test_engine_command_refuses_bad_input() -> None:
    result = runner.invoke(app, ["engine", "--dtype", "float16"])
    assert result.exit_code == 2 and "unknown dtype 'float16'" in result.stderr
    result = runner.invoke(app, ["engine", "--port", "70000"])
    assert result.exit_code == 2
    for where in ("/", "/no/such/directory/log.jsonl"):
        result = runner.invoke(app, ["engine", "--port", "0", "--request-log", where])
        assert result.exit_code == 2 and "--request-log" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "engine" in runner.invoke(app, ["--help"]).stdout
    for command in ("run", "sweep", "profile"):
        assert "--engine-url" in runner.invoke(app, [command, "--help"], terminal_width=200).stdout
