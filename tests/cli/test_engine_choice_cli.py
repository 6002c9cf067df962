"""The CLI and mmbench.api make the engine with one function (choose_engine): the same bad mix is the
same one-line message from either, exit 2 on the command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmbench import api
from mmbench.cli import app
from mmbench.errors import MmbenchError
from mmbench.measure.engines import Vllm

runner = CliRunner()
URL = "http://127.0.0.1:9"  # never reached: every mix here is refused before
SCENARIO = {"version": 1, "description": "x", "mode": ["full"], "rollouts": [1]}


@pytest.mark.parametrize(
    ("args", "call"),
    [
        (["run", "--engine", "vlm"], lambda: api.run_point(engine="vlm")),
        (["run", "--engine", "vllm", "--engine-url", URL],
         lambda: api.run_point(engine="vllm", engine_url=URL)),
        (["run", "--engine", "embedded", "--engine-url", URL],
         lambda: api.run_point(engine="embedded", engine_url=URL)),
        (["run", "--engine-model", "/tmp"], lambda: api.run_point(vllm=Vllm(model="/tmp"))),
        (["run", "--vllm-python", sys.executable], lambda: api.run_point(vllm=Vllm(python=sys.executable))),
        (["run", "--engine", "vllm", "--engine-ready-timeout", "0"],
         lambda: api.run_point(engine="vllm", vllm=Vllm(ready_timeout_s=0))),
        (["run", "--engine-arg=--max-num-seqs=8"], lambda: api.run_point(engine_args="--max-num-seqs=8")),
        (["run", "--engine", "vllm", "--codec", "fast"], lambda: api.run_point(engine="vllm", codec="fast")),
        (["run", "--engine", "vllm", "--engine-error-rate", "0.5"],
         lambda: api.run_point(engine="vllm", engine_error_rate=0.5)),
        (["sweep", "-k", "1", "--modes", "full", "--engine-url", URL, "--cluster", "local:1"],
         lambda: api.run_sweep(SCENARIO, engine_url=URL, cluster="local:1")),
        (["sweep", "-k", "1", "--modes", "full", "--engine", "vllm", "--cluster", "local:1"],
         lambda: api.run_sweep(SCENARIO, engine="vllm", cluster="local:1")),
        (["sweep", "-k", "1", "--modes", "full", "--engine", "vllm", "--engine-url", URL],
         lambda: api.run_sweep(SCENARIO, engine="vllm", engine_url=URL)),
        # a fleet: mmbench starts its replicas, so not behind an --engine-url; its knobs need replicas
        (["run", "--replicas", "2", "--engine-url", URL], lambda: api.run_point(replicas=2, engine_url=URL)),
        (["run", "--router-policy", "round_robin"], lambda: api.run_point(router_policy="round_robin")),
        (["run", "--replicas", "2", "--router-policy", "least_busy"],
         lambda: api.run_point(replicas=2, router_policy="least_busy")),
        (["run", "--replicas", "2", "--session-header", "yes"],
         lambda: api.run_point(replicas=2, session_header="yes")),
        (["run", "--replicas", "1", "--kill-replica-at-turn", "2"],
         lambda: api.run_point(replicas=1, kill_replica_at_turn=2)),
        (["run", "--replicas", "17"], lambda: api.run_point(replicas=17)),
    ],
)  # fmt: skip
def test_the_api_refuses_a_mix_with_the_clis_message(
    args: list[str], call: Callable[[], object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing written here, by either
    out = runner.invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 2, out.stdout + out.stderr
    with pytest.raises(MmbenchError) as caught:
        call()
    assert caught.value.exit_code == 2
    assert out.stderr.strip().splitlines() == [f"mmbench: error: {caught.value}"]
    assert out.stdout == ""  # refused before the sweep says what it will do
    assert list(tmp_path.iterdir()) == []
