"""mmbench plan's core and reporter, and preflight's margin: predictions only, nothing runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mmbench.analysis.plan import PARTS, plan, system_parts
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.harness import prediction_for
from mmbench.measure.model import predict
from mmbench.measure.model.constants import CONSTANTS
from mmbench.measure.preflight import MARGIN, preflight, with_margin
from mmbench.reporters.plan_report import COLUMNS, render_json, render_markdown
from mmbench.transports.registry import MODES
from mmbench.units import GIB, MIB

BASE = PointConfig(image_size="256", turns=4)


def need(config: PointConfig) -> int:
    per_image, _ = prediction_for(config)
    return with_margin(predict(config, per_image))


def test_the_largest_k_fits_and_one_more_does_not() -> None:
    result = plan(BASE, 2 * GIB)
    assert [m.mode for m in result.modes] == list(MODES)
    for m in result.modes:
        assert m.rollouts >= 1
        at = replace(BASE, mode=m.mode, rollouts=m.rollouts)
        assert need(at) == m.need_bytes <= 2 * GIB
        assert need(replace(at, rollouts=m.rollouts + 1)) > 2 * GIB
        assert m.binding in PARTS
        assert m.prediction.retained_bytes > 0 and m.bytes_per_turn > 0


def test_more_memory_fits_more_rollouts_and_modes_can_be_chosen() -> None:
    small = plan(BASE, 2 * GIB, ["full", "hash-only"])
    large = plan(BASE, 8 * GIB, ["full", "hash-only"])
    assert [m.mode for m in small.modes] == ["full", "hash-only"]
    for s, big in zip(small.modes, large.modes, strict=True):
        assert big.rollouts > s.rollouts


def test_a_machine_too_small_for_one_rollout_plans_none_and_says_what_binds() -> None:
    (m,) = plan(BASE, 200 * MIB, ["full"]).modes
    assert m.rollouts == 0 and m.binding == "client peak"
    assert m.need_bytes > 200 * MIB


def test_the_typical_k_is_the_largest_whose_typical_peak_fits_and_never_below_the_bound() -> None:
    for m in plan(BASE, 2 * GIB).modes:
        per_image, _ = prediction_for(BASE)
        at = replace(BASE, mode=m.mode, rollouts=m.typical_rollouts)
        assert predict(at, per_image).typical_system_peak_bytes <= 2 * GIB
        beyond = predict(replace(at, rollouts=m.typical_rollouts + 1), per_image)
        assert beyond.typical_system_peak_bytes > 2 * GIB
        assert m.typical_rollouts >= m.rollouts


def test_a_typical_peak_lies_between_the_live_data_and_the_bound() -> None:
    for mode in MODES:
        p = predict(replace(BASE, mode=mode, rollouts=8), 100_000.0)
        assert p.retained_bytes <= p.typical_peak_bytes <= p.peak_bytes
        assert p.engine_cache_bytes < p.typical_engine_peak_bytes <= p.engine_peak_bytes


def test_the_parts_add_up_to_the_system_peak() -> None:
    p = predict(replace(BASE, rollouts=4), 100_000.0)
    assert sum(system_parts(p).values()) == p.system_peak_bytes


@pytest.mark.parametrize(("memory", "modes", "message"), [
    (0, None, "more than 0"),
    (GIB, ["nope"], "does not cover mode 'nope'"),
])  # fmt: skip
def test_bad_input_is_one_line(memory: int, modes: list[str] | None, message: str) -> None:
    with pytest.raises(MmbenchError, match=message):
        plan(BASE, memory, modes)


def test_markdown_and_json_say_the_same() -> None:
    result = plan(BASE, 2 * GIB)
    md = render_markdown(result)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(rows) == 1 + len(result.modes)
    data = json.loads(render_json(result))
    assert data["memory_bytes"] == 2 * GIB and data["margin"] == MARGIN
    for row, m in zip(rows[1:], data["modes"], strict=True):
        assert row.startswith(f"| {m['mode']} | {m['rollouts']} |")
        assert sum(m["parts_bytes"].values()) == m["system_peak_bytes"]


def test_preflight_keeps_its_margin_on_top_of_the_prediction() -> None:
    config = replace(BASE, rollouts=4)
    prediction = predict(config, 0.0)
    predicted = prediction.system_peak_bytes
    fits = preflight(config, budget=with_margin(prediction))
    assert fits.fits and fits.predicted_bytes == predicted and fits.need_bytes == with_margin(prediction)
    refused = preflight(config, budget=predicted)  # the prediction alone fits, with the margin it does not
    assert not refused.fits
    assert refused.reason.startswith("predicted ") and f"{MARGIN:.0%} margin" in refused.reason


def test_the_margin_is_on_what_moves_not_on_the_baselines_and_the_engine_cache() -> None:
    config = replace(BASE, rollouts=16, engine_cache_gb=0.5)
    p = predict(config, 0.0)
    exact = p.client_baseline_bytes + CONSTANTS.engine_baseline + p.engine_cache_bytes
    assert p.engine_cache_bytes > 0 and p.exact_bytes == exact
    moves = p.system_peak_bytes - exact
    assert with_margin(p) == exact + int(moves * (1 + MARGIN))
    assert p.system_peak_bytes < with_margin(p) < int(p.system_peak_bytes * (1 + MARGIN))
    on_vllm = predict(config, 0.0, engine="vllm")  # vLLM's cache is fitted, not exact: margin on it
    assert on_vllm.exact_bytes == on_vllm.client_baseline_bytes + CONSTANTS.vllm_baseline
