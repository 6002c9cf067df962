"""The fidelity section (sim against the renderers library) on hand-built records, and the
fingerprint of what a renderer produced on hand-built trajectories (issue 11)."""

from __future__ import annotations

import json

import numpy as np

from mmbench.analysis.fidelity import fidelity_rows
from mmbench.analysis.report import build_report
from mmbench.config import PointConfig
from mmbench.measure.fingerprint import fingerprint
from mmbench.reporters.markdown import render_json, render_markdown
from mmbench.results import PointRecord, ResultsFile
from mmbench.rollout import Conversation, Step, Trajectory
from mmbench.rollout.state import RolloutCounters
from mmbench.units import MIB
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from tests.helpers import flat_record


def record(
    renderer: str, mode: str = "full", k: int = 2, retained: int = 100 * MIB, **kw: object
) -> PointRecord:
    config = PointConfig(mode=mode, rollouts=k, renderer=renderer, turns=4)
    fields: dict[str, object] = dict(
        retained_live_bytes=retained, retained_bytes=retained, peak_bytes=3 * retained,
        bytes_shipped=160 * MIB, image_tokens=2048, pixel_shapes="1024x1536", sidecar_digest="abc",
        prompt_tokens=2400,
    )  # fmt: skip
    fields.update(kw)
    return flat_record(**config.to_dict(), **fields)


def test_points_pair_by_every_other_parameter_and_compare_exactly() -> None:
    records = [
        record("sim"), record("renderers", retained=105 * MIB, prompt_tokens=2462),
        record("sim", k=4), record("renderers", k=4, sidecar_digest="other"),
        record("sim", mode="raw"),  # no renderers twin: not a pair
        record("renderers", mode="ephemeral"),  # no sim twin
    ]  # fmt: skip
    rows = fidelity_rows(records)
    assert [(r.mode, r.rollouts) for r in rows] == [("full", 2), ("full", 4)]
    assert rows[0].same_images is True and rows[1].same_images is False
    assert rows[0].ratio("client.retained_live_bytes") == 1.05
    assert rows[0].ratio("traffic.bytes_shipped") == 1.0


def test_memory_ratios_below_the_rss_noise_floor_are_not_shown() -> None:
    (row,) = fidelity_rows([record("sim", retained=MIB), record("renderers", retained=3 * MIB)])
    assert row.ratio("client.retained_live_bytes") is None
    assert row.ratio("client.peak_bytes") == 3.0  # 3 and 9 MiB: above it


def test_the_report_has_a_fidelity_section_only_with_pairs() -> None:
    pair = ResultsFile({}, {"name": "fidelity"}, [record("sim"), record("renderers", retained=105 * MIB)])
    text = render_markdown(build_report(pair))
    assert "### Fidelity: sim against the renderers library" in text
    assert "| full | 2 | same | 2048 | 100.0 MiB | 105.0 MiB | 1.050 |" in text
    data = json.loads(render_json(build_report(pair)))
    assert data["fidelity"][0]["retained_live_bytes_ratio"] == 1.05
    alone = ResultsFile({}, {"name": "sim"}, [record("sim")])
    assert "Fidelity" not in render_markdown(build_report(alone))


def _trajectory(hashes: list[str], with_pixels: bool) -> Trajectory:
    grid = np.array([[1, 4, 4]])
    items = [MMItem(grid, 0, np.zeros((16, 8), np.float32) if with_pixels else None) for _ in hashes]
    sidecar = MultiModalData(hashes, [Placeholder(10 * i, 4) for i in range(len(hashes))], items)
    return Trajectory(0, Conversation(), [Step(40, [1], [0.0], sidecar)], RolloutCounters())


def test_fingerprint_digests_hashes_grids_and_placeholders_not_pixel_values() -> None:
    full = fingerprint([_trajectory(["a", "b"], True)])
    descriptors = fingerprint([_trajectory(["a", "b"], False)])
    assert full.sidecar_digest == descriptors.sidecar_digest
    assert (full.image_tokens, full.prompt_tokens) == (8, 40)
    assert (full.pixel_shapes, descriptors.pixel_shapes) == ("16x8", "")
    assert fingerprint([_trajectory(["b", "a"], True)]).sidecar_digest != full.sidecar_digest
