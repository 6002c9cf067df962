"""Scenario variants: [[variant]] tables of overrides on top of the grid (one knob at a time)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from mmbench.errors import MmbenchError
from mmbench.sweep.scenarios import load_scenario, parse_scenario

BASE = """
version = 1
description = "variants"
mode = "full"
rollouts = [2, 4]
image_size = 256
"""


def parse(text: str) -> Any:
    return parse_scenario(tomllib.loads(text), "v", "v.toml")


def knobs(points: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.rollouts, p.max_inflight_builds, p.dtype) for p in points]


def test_without_variants_the_grid_alone() -> None:
    scenario = parse(BASE)
    assert scenario.variants == ()
    assert knobs(scenario.points()) == [(2, 0, "float32"), (4, 0, "float32")]
    assert [name for name, _ in scenario.labelled_points()] == [None, None]
    assert "variants" not in scenario.to_dict()


def test_each_variant_overrides_the_grid_in_file_order() -> None:
    scenario = parse(
        BASE
        + """
[[variant]]
name = "baseline"
[[variant]]
name = "cap"
max_inflight_builds = [1, 4]
[[variant]]
dtype = "bfloat16"
rollouts = 4
"""
    )
    assert knobs(scenario.points()) == [
        (2, 0, "float32"), (4, 0, "float32"),
        (2, 1, "float32"), (4, 1, "float32"), (2, 4, "float32"), (4, 4, "float32"),
        (4, 0, "bfloat16"),
    ]  # fmt: skip
    names = [name for name, _ in scenario.labelled_points()]
    assert names == ["baseline"] * 2 + ["cap"] * 4 + ["variant 3"]
    assert scenario.points() == scenario.points()  # deterministic
    assert scenario.to_dict()["variants"] == [
        {"name": "baseline"},
        {"name": "cap", "max_inflight_builds": [1, 4]},
        {"name": "variant 3", "dtype": ["bfloat16"], "rollouts": [4]},
    ]


def test_a_point_two_variants_plan_runs_once() -> None:
    scenario = parse(
        BASE
        + """
[[variant]]
name = "a"
[[variant]]
name = "b"
rollouts = [4, 8]
"""
    )
    assert [p.rollouts for p in scenario.points()] == [2, 4, 8]
    assert [n for n, _ in scenario.labelled_points()] == ["a", "a", "b"]


def test_flags_override_the_grid_and_every_variant() -> None:
    scenario = parse(
        BASE
        + """
[[variant]]
name = "baseline"
[[variant]]
name = "bf16"
dtype = "bfloat16"
rollouts = 8
"""
    )
    chosen = scenario.with_overrides({"rollouts": [1]})
    assert knobs(chosen.points()) == [(1, 0, "float32"), (1, 0, "bfloat16")]
    # a flag that sets a variant's own knob makes it the baseline: its points are not repeated
    same = scenario.with_overrides({"dtype": ["float32"]})
    assert knobs(same.points()) == [(2, 0, "float32"), (4, 0, "float32"), (8, 0, "float32")]
    assert same.variants[1].overrides == {"rollouts": [8]}


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("variant = 3\n", "variant must be an array of tables"),
        ("variant = []\n", "variant must be an array of tables"),
        ("variant = [1, 2]\n", "variant must be an array of tables"),
        ("[variant]\nname = 'x'\n", "variant must be an array of tables"),
        ("[[variant]]\nname = ''\n", "variant 1: name must be a non-empty string"),
        ("[[variant]]\nname = 3\n", "variant 1: name must be a non-empty string"),
        ("[[variant]]\nname = 'a'\n[[variant]]\nname = 'a'\ndtype = 'bfloat16'\n", "the name is used twice"),
        ("[[variant]]\nname = 'a'\nrolouts = 2\n", "variant 'a': unknown key 'rolouts'; known keys: name,"),
        ("[[variant]]\nname = 'a'\nversion = 1\n", "variant 'a': unknown key 'version'"),
        ("[[variant]]\nname = 'a'\ndtype = 'float16'\n", "variant 'a': unknown dtype 'float16'"),
        ("[[variant]]\nname = 'a'\nmax_inflight_builds = -1\n", "variant 'a': max_inflight_builds must be"),
        ("[[variant]]\nname = 'a'\ntrim_after_build = true\n", "variant 'a': trim_after_build must be str"),
        ("[[variant]]\nname = 'a'\nrollouts = []\n", "variant 'a': rollouts is an empty list"),
        ("[[variant]]\nname = 'a'\n[[variant]]\nname = 'b'\nrollouts = 4\n", "variant 'b': adds no point"),
        ("[[variant]]\nname = 'a'\nseed = [" + ", ".join(map(str, range(6000))) + "]\n", "more than 10000"),
    ],
)
def test_bad_variants_give_one_line(tail: str, message: str) -> None:
    with pytest.raises(MmbenchError) as err:
        parse(BASE + tail)
    text = str(err.value)
    assert text.startswith("v.toml: ") and "\n" not in text
    assert message in text, text


def test_the_knobs_scenario_turns_one_knob_per_variant() -> None:
    scenario = load_scenario("knobs")
    labelled = scenario.labelled_points()
    name, base = labelled[0]
    assert name == "baseline"
    assert (base.mode, base.rollouts, base.turns, base.image_size) == ("full", 8, 8, "512")
    knob_names = (
        "max_inflight_builds",
        "trim_after_build",
        "malloc_arena_max",
        "malloc_mmap_threshold",
        "dtype",
    )
    turned: list[str] = []
    for name, config in labelled[1:]:
        changed = [k for k, v in config.to_dict().items() if v != getattr(base, k)]
        assert len(changed) == 1 and changed[0] in knob_names, (name, changed)
        turned.append(changed[0])
    assert set(turned) == set(knob_names)
