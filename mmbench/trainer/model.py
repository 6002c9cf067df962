"""The trainer stage's model: what each mode should cost the orchestrator and the trainer ranks,
from the point's parameters alone (research notes, section 4.2), to sit beside each measurement;
and the arithmetic beyond what ran (model-parallel replication, a queued step, more ranks),
marked as extrapolated in the record.

The packing is the orchestrator's own (first fit on equal-length samples, bins dealt round robin),
applied to the samples' predicted lengths, so that the model and the measurement deal the same
images to the same ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmbench.config import PointConfig
from mmbench.facts import facts_of
from mmbench.record import OrchestratorFigures, TrainerExtrapolated, TrainerPrediction, TrainerRanks
from mmbench.trainer.packing import PIXELS, payload_of
from mmbench.world.media import data_url_prefix

TOKEN_BYTES = 4 + 1  # input_ids int32 + mm_token_type_ids int8, per token
FILE_URL_BYTES = 80  # file:///tmp/mmbench-point-<8>/assets/<32 hex>.png
REF_OVERHEAD = 40  # a ref's offset, length and grid, and msgpack framing
TENSOR_OVERHEAD = 60  # an EncodedTensor's dtype, shape and framing
# A derivation's temporaries beside its output: the resized float32 image and its temporal repeat.
DERIVE_TEMP_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Layout:
    """The step as the orchestrator packs it: samples per bin, bins per rank, image keys."""

    sample_tokens: int
    bins_per_rank: list[list[list[int]]]  # rank -> bin -> rollouts

    def keys(self, rollouts: list[int], config: PointConfig) -> set[tuple[int, int, int]]:
        g = config.group_size
        return {
            (r - r % g if t == 0 else r, t, i)
            for r in rollouts for t in range(config.turns) for i in range(config.images_per_turn)
        }  # fmt: skip


def layout(config: PointConfig) -> Layout:
    facts = facts_of(config)
    per_image = facts.layout.placeholder_tokens if facts.mode.renders else facts.layout.tokens
    c = config
    tokens = c.turns * (c.text_tokens_per_turn + c.completion_tokens + c.images_per_turn * per_image)
    per_bin = max(1, (c.seq_len or tokens) // tokens)
    rollouts = list(range(c.rollouts))
    bins = [rollouts[i : i + per_bin] for i in range(0, len(rollouts), per_bin)]
    return Layout(tokens, [bins[r :: c.dp_ranks] for r in range(c.dp_ranks)])


def _ref_bytes(config: PointConfig, source_bytes: float) -> float:
    if config.mode == "raw-file":
        return FILE_URL_BYTES
    return len(data_url_prefix(config.image_format)) + 4 * math.ceil(source_bytes / 3)


def predict_trainer(config: PointConfig, source_bytes: float) -> TrainerPrediction:
    facts = facts_of(config)
    c = config
    lay = layout(config)
    pixels = payload_of(c.mode, c.rederive_at) == PIXELS
    dedup = c.dedup == "on"
    p = facts.pixel_bytes
    slots_per_sample = c.turns * c.images_per_turn
    slots = c.rollouts * slots_per_sample
    unique_step = len(lay.keys(list(range(c.rollouts)), c))
    per_image = p + TENSOR_OVERHEAD if pixels else _ref_bytes(c, source_bytes) + REF_OVERHEAD
    rank_bytes: list[float] = []
    rank_images: list[int] = []
    lazy_runs = 0
    mb_images = 0
    for bins in lay.bins_per_rank:
        rollouts = [r for b in bins for r in b]
        images = len(lay.keys(rollouts, c)) if dedup else len(rollouts) * slots_per_sample
        rank_images.append(images)
        rank_bytes.append(len(rollouts) * lay.sample_tokens * TOKEN_BYTES + images * per_image)
        for b in bins:
            n = len(lay.keys(b, c)) if dedup else len(b) * slots_per_sample
            lazy_runs += n
            mb_images = max(mb_images, n)
    # the orchestrator holds the traces (pixels where the mode kept them, sources, URLs), builds the
    # samples, and at most one rank's encoded buffer at a time
    sources = 0.0 if c.mode in ("raw", "raw-file") else slots * source_bytes
    kept = {"full": slots, "hash-only": unique_step}.get(c.mode, 0) * p
    urls = slots * _ref_bytes(c, source_bytes) if c.mode in ("raw", "raw-file") else 0.0
    packed_images = (unique_step if dedup else slots) if pixels else 0
    samples = packed_images * p if pixels else slots * _ref_bytes(c, source_bytes)
    one_sample = slots_per_sample * p if pixels and not dedup else 0
    orchestrator_peak = sources + kept + urls + samples + max(one_sample, max(rank_bytes, default=0))
    top = max(range(len(rank_bytes)), key=lambda i: rank_bytes[i]) if rank_bytes else 0
    decode = 2 * rank_bytes[top] if rank_bytes else 0  # the received buffer and its decoded copy
    if pixels:
        eager = max(decode, 2 * rank_images[top] * p)  # decoded + bytearray copies of the step
        lazy = max(decode, rank_bytes[top] + mb_images * p)
    else:
        temp = DERIVE_TEMP_FACTOR * p
        eager = max(decode, rank_bytes[top] + rank_images[top] * p + temp)
        lazy = max(decode, rank_bytes[top] + mb_images * p + temp)
    ephemeral_here = c.mode.startswith("ephemeral") and pixels
    return TrainerPrediction(
        bytes_shipped=int(sum(rank_bytes)), pixel_bytes=packed_images * p,
        orchestrator_peak_bytes=int(orchestrator_peak), eager_peak_bytes=int(eager),
        lazy_peak_bytes=int(lazy),
        orchestrator_processor_runs=(unique_step if dedup else slots) if ephemeral_here else 0,
        eager_processor_runs=0 if pixels else sum(rank_images),
        lazy_processor_runs=0 if pixels else lazy_runs,
    )  # fmt: skip


def extrapolate(
    config: PointConfig, orchestrator: OrchestratorFigures, eager: TrainerRanks, lazy: TrainerRanks
) -> TrainerExtrapolated:
    """The measured step at model_parallel ranks per DP rank (each receives its own copy and, with
    refs, derives the pixels again), with the next step queued on an eager rank, and at twice the
    DP ranks (the largest rank's share of the bins)."""
    r = config.model_parallel
    ranks = eager if eager.peak_bytes else lazy  # the policy that ran (eager where both did)
    shipped = orchestrator.bytes_shipped
    per_rank = orchestrator.bytes_per_rank
    bins = orchestrator.micro_batches or 0
    now, then = math.ceil(bins / config.dp_ranks), math.ceil(bins / (2 * config.dp_ranks))
    return TrainerExtrapolated(
        model_parallel=r, bytes_shipped=shipped * r if shipped is not None else None,
        trainer_processor_runs=sum(ranks.processor_runs) * r,
        trainer_rederive_cpu_s=sum(ranks.materialize_cpu_s) * r if sum(ranks.processor_runs) else 0.0,
        eager_peak_queued_bytes=(
            max(eager.peak_bytes) + max(per_rank) if eager.peak_bytes and per_rank else None
        ),
        bytes_per_rank_at_double_ranks=int(max(per_rank) * then / now) if per_rank and now else None,
    )  # fmt: skip
