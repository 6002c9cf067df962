"""The engine a point runs on is one value (mmbench.measure.engines.EngineChoice): made and checked
once by choose_engine, checked against a sweep's points once, and asked what it means."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure import harness
from mmbench.measure.engines import VLLM, Embedded, EngineChoice, External, Vllm, choose_engine
from mmbench.measure.harness import HarnessOptions
from mmbench.record import EngineRecord, PointRecord
from mmbench.sweep.loop import run_sweep
from mmbench.sweep.scenarios import Scenario
from mmbench.world.engine.remote import EMBEDDED


def test_the_choices_make_one_value() -> None:
    assert choose_engine() == Embedded() == choose_engine("embedded")
    assert choose_engine(default=VLLM) == Vllm()  # a scenario's engine, where no flag names one
    options = Vllm(model="/m", ready_timeout_s=5)
    assert choose_engine(VLLM, vllm=options) == options
    assert choose_engine(url=" http://127.0.0.1:9/ ") == External("http://127.0.0.1:9")  # normalized once
    assert choose_engine(url="http://h:1", default=VLLM) == External("http://h:1")  # the URL's engine serves
    assert choose_engine(cluster=True) == Embedded()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "tgi"}, "unknown engine 'tgi'; choose one of: embedded, vllm"),
        ({"name": VLLM, "url": "http://h:1"}, "--engine-url and --engine do not go together"),
        ({"name": EMBEDDED, "url": "http://h:1"}, "--engine-url and --engine do not go together"),
        ({"vllm": Vllm(python="/p")}, "--vllm-python is an option of --engine vllm; add --engine vllm"),
        ({"name": VLLM, "vllm": Vllm(ready_timeout_s=0)}, "--engine-ready-timeout must be a number"),
        ({"url": "http://h:1", "cluster": True}, "--engine-url and --cluster do not go together"),
        ({"name": VLLM, "cluster": True}, "--engine vllm and --cluster do not go together yet"),
        ({"default": VLLM, "cluster": True}, "--engine vllm and --cluster do not go together yet"),
        ({"url": "h:1"}, "--engine-url 'h:1' is not an http(s)://HOST[:PORT] address"),
    ],
)
def test_a_mix_that_cannot_be_is_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MmbenchError) as caught:
        choose_engine(**kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value) and caught.value.exit_code == 2


def test_each_engine_says_what_it_means() -> None:
    url = "http://127.0.0.1:9"
    # which engine the model predicts for: an external engine's memory is not the point's
    assert (Embedded.served, External.served, Vllm.served) == (EMBEDDED, EMBEDDED, VLLM)
    assert (Embedded.started, External.started, Vllm.started) == (True, False, True)
    defaults = (dict(Embedded.defaults), dict(External.defaults), dict(Vllm.defaults))
    assert defaults == ({}, {}, {"codec": VLLM})
    assert Embedded().identity() == EngineRecord(kind=EMBEDDED)
    assert External(url).identity() == EngineRecord(kind="external", url=url)
    assert Vllm(ready_timeout_s=7).timeout_s == 7 and Vllm().timeout_s > 0


@pytest.mark.parametrize(
    "engine", [Embedded(), External("http://127.0.0.1:9"), Vllm(python="/p", model="/m")]
)
def test_harness_options_cross_a_process_boundary(engine: EngineChoice) -> None:
    options = HarnessOptions(force=True, engine=engine)
    assert pickle.loads(pickle.dumps(options)) == options  # what a cluster or a worker receives


def test_a_sweep_checks_its_points_against_the_engine_once_not_per_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checked: list[list[PointConfig]] = []
    measured: list[PointConfig] = []
    monkeypatch.setattr(Embedded, "check", lambda self, configs: checked.append(list(configs)))

    def measure(
        config: PointConfig, repeat: int, opts: HarnessOptions, served_by: EngineRecord
    ) -> PointRecord:
        measured.append(config)
        return PointRecord(config, repeat, engine=served_by)

    monkeypatch.setattr(harness, "_measure_point", measure)  # what measure_point wraps: no processes
    scenario = Scenario("once", "three points", {"mode": ["full"], "rollouts": [1, 2, 4]})
    results = run_sweep(scenario, tmp_path / "out")
    assert len(measured) == 3 and len(checked) == 1 and len(checked[0]) == 3
    assert {r.engine.kind for r in results.points} == {EMBEDDED}  # the record's identity, from the value
