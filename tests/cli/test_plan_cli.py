"""`mmbench plan` through Typer's CliRunner: formats, flags, and bad input (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmbench.cli import app
from mmbench.transports.registry import MODES

runner = CliRunner()
SMALL = ("--image-size", "256", "--turns", "4")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_plan_prints_a_row_per_mode_the_model_covers() -> None:
    out = invoke("plan", "--memory", "3GiB", *SMALL, "--format", "json")
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert [m["mode"] for m in data["modes"]] == list(MODES)
    assert data["memory_bytes"] == 3 * 1024**3
    assert data["point"]["image_size"] == "256" and data["point"]["turns"] == 4
    assert all(m["rollouts"] >= 1 and m["need_bytes"] <= 3 * 1024**3 for m in data["modes"])
    table = invoke("plan", "--memory", "3GiB", *SMALL)
    assert table.exit_code == 0 and "largest K" in table.stdout and "binding" in table.stdout
    md = invoke("plan", "--memory", "3GiB", *SMALL, "--modes", "full,hash-only", "--format", "markdown")
    assert md.exit_code == 0 and md.stdout.startswith("## What fits in 3.0 GiB")
    assert "| full |" in md.stdout and "| hash-only |" in md.stdout and "| ephemeral |" not in md.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--rollouts", "4"), "plan finds the largest K itself"),
    (("--memory", "lots"), "--memory: cannot read 'lots'"),
    (("--format", "xml"), "--format: unknown value 'xml'"),
    (("--modes", "nope"), "does not cover mode 'nope'"),
    (("--turns", "2,4"), "one value for a single point"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    out = invoke("plan", *SMALL, *args)
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
