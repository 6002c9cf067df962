"""The trainer stage end to end: a measured point's own trajectories through the orchestrator and
the trainer-rank processes. One point, planted: every tensor but the one changed matches the
engine's, and the change fails the point loudly."""

from __future__ import annotations

from mmbench.config import PointConfig
from mmbench.measure.harness import HarnessOptions, measure_point
from tests.helpers import leftover_processes


def test_a_point_whose_trainer_sees_other_pixels_fails_and_the_rest_match() -> None:
    config = PointConfig(
        mode="ephemeral", rederive_at="trainer", rollouts=2, turns=2, image_size="64", model="qwen2-vl",
        trainer="lazy", group_size=2, dedup="on",
    )  # fmt: skip
    record = measure_point(config, options=HarnessOptions(plant_trainer_difference=True))
    t = record.trainer
    assert record.status == "failed"
    assert record.cause is not None and "1 of 4 pixel tensors the trainer used differ" in record.cause
    # 2 rollouts x 2 turns, the first turn's image shared by the group: 3 distinct images
    assert (t.checked, t.wrong, t.orchestrator.samples, t.orchestrator.unique_images) == (4, 1, 2, 3)
    assert t.transport == "files" and len(t.lazy.peak_bytes) == 2 and t.eager.peak_bytes == []
    assert t.orchestrator.bytes_per_rank == t.lazy.bytes_received
    # refs on the wire: each rank derives its images (one sample each, dedup within the rank)
    assert t.lazy.processor_runs == [2, 2]
    assert t.orchestrator.pixel_bytes == 0 and t.orchestrator.processor_runs == 0
    assert t.prediction.lazy_processor_runs == 4 and t.extrapolated.model_parallel == 8
    assert t.client_processor_runs == record.client.rendering.cache_misses
    assert not leftover_processes()
