"""mmbench profile end to end: a small point through the command, with memray tracking the worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mmbench.cli.profile import profile
from mmbench.config import PointConfig
from mmbench.measure.profile import profile_point

SMALL = ("--mode", "full", "--rollouts", "2", "--turns", "2", "--image-size", "256")
runner = CliRunner()
# The command on its own app, so that these tests do not depend on where cli/__init__ mounts it.
app = typer.Typer()
app.command()(profile)
app.command("noop")(lambda: None)  # a second command keeps `profile` a subcommand, as when mounted


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["profile", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("profile") / "full"
    done = invoke(*SMALL, "--out", str(out))
    assert done.exit_code == 0, done.output
    return out, done.stdout


def test_writes_the_capture_the_flamegraphs_and_the_tables(profiled: tuple[Path, str]) -> None:
    out, stdout = profiled
    assert [p.name for p in out.glob("*.bin")] == ["full-K2-r0.bin"]
    for name in ("flamegraph.html", "flamegraph-retained.html"):
        html = (out / name).read_text()
        assert html.lstrip().lower().startswith("<!doctype html>")
        assert "flamegraph" in html.lower() and "memray" in html.lower()
    assert (out / "sites.md").read_text().startswith("# mmbench profile: full, K=2, N=2, 256x256")
    assert "Heap by category" in stdout and "trajectory storage" in stdout


def test_sites_are_mmbench_functions_and_categories_add_up(profiled: tuple[Path, str]) -> None:
    out, _ = profiled
    data = json.loads((out / "sites.json").read_text())
    assert data["schema_version"] == 2 and data["point"]["config"]["rollouts"] == 2
    for snap in data["snapshots"].values():
        assert snap["sites"], snap["name"]
        assert all(s["path"].startswith("mmbench/") for s in snap["sites"])
        assert sum(c["bytes"] for c in snap["categories"].values()) == snap["total_bytes"]
        assert sum(c["share"] for c in snap["categories"].values()) == pytest.approx(1.0)
    high, retained = data["snapshots"]["high_water_mark"], data["snapshots"]["retained"]
    assert high["total_bytes"] == data["point"]["client"]["memray_peak_bytes"]
    # full mode: the trajectories keep every image's pixels, made in the renderer's preprocess
    top = retained["sites"][0]
    assert (top["function"], top["path"], top["category"]) == (
        "preprocess", "mmbench/world/renderer.py", "trajectory"
    )  # fmt: skip
    pixels = data["point"]["client"]["accounting"]["stored_pixel_bytes"]
    trajectory = retained["categories"]["trajectory"]["bytes"]
    assert pixels <= trajectory < pixels * 1.05
    assert retained["categories"]["trajectory"]["share"] > 0.5
    assert high["categories"]["transport"]["bytes"] > 0  # the request bodies in flight at the peak


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "nothing"
    done = invoke("--mode", "nope", "--out", str(out))
    assert done.exit_code == 2
    assert done.stderr.count("\n") == 1 and "unknown" in done.stderr
    assert not out.exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    done = invoke(*SMALL, "--out", str(used))
    assert done.exit_code == 2 and "not an empty directory" in done.stderr
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_native_traces_still_give_a_flamegraph(tmp_path: Path) -> None:
    config = PointConfig(mode="hash-only", rollouts=1, turns=2, image_size="256")
    result = profile_point(config, tmp_path / "native", native=True, top=5)
    assert result.native and not result.missing
    assert (tmp_path / "native" / "flamegraph.html").stat().st_size > 0
    assert result.retained.sites and all(s.path.startswith("mmbench/") for s in result.retained.sites)
