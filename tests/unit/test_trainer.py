"""mmbench.trainer on hand-built traces, in this process: every mode's payload through the
orchestrator and both trainer policies, the engine's checksums held against the trainer's (in
every mode a planted one-pixel difference is caught), packing, dedup, the model, the knobs."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.trainer import orchestrator, rank
from mmbench.trainer.model import layout, predict_trainer
from mmbench.trainer.packing import PIXELS, REFS, Sample, first_fit, micro_batch, payload_of
from mmbench.trainer.stage import check
from mmbench.trainer.traces import read_traces, write_records
from mmbench.trainer.wire import EncodedTensor, OrchestratorJob, RankResult, Trace, TraceImage, TrainerJob
from mmbench.world.codec import pixel_checksum
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, SourceStore
from mmbench.world.media import AssetStore, data_url
from mmbench.world.renderer import decode_image, image_hash, process_image
from mmbench.world.wire import IMAGE_PAD_TOKEN

MODEL = "qwen2-vl"  # a 64x64 source stays small (56x56: 16 patches of 1176 floats)
PIXELS_PER_IMAGE = 16 * 1176 * 4
CASES = [  # (mode, rederive_at)
    ("full", "orchestrator"), ("hash-only", "orchestrator"), ("ephemeral", "orchestrator"),
    ("ephemeral", "trainer"), ("raw", "orchestrator"), ("raw-file", "orchestrator"),
]  # fmt: skip


def make_traces(tmp: Path, mode: str, rollouts: int = 4, turns: int = 2, group: int = 1) -> list[Trace]:
    """Traces as the worker writes them for `mode`: 64x64 photos."""
    geometry = get_geometry(MODEL)
    store = SourceStore(SourceSpec(64, 64, "png", "photo"), None, group)
    assets = AssetStore(tmp / "assets")
    shipped: set[str] = set()
    traces = []
    for r in range(rollouts):
        tokens: list[int] = []
        images = []
        for t in range(turns):
            tokens += [7] * 8
            source = store.get(r, t, 0)
            pixels, grid = process_image(decode_image(source), geometry)
            length = pixels.shape[0] // 4
            im = TraceImage(
                mm_hash=image_hash(decode_image(source)), grid=grid.reshape(-1).tolist(), offset=len(tokens),
                length=length, checksum=pixel_checksum(pixels),
            )  # fmt: skip
            tokens += [IMAGE_PAD_TOKEN] * length
            if mode in ("raw", "raw-file"):
                url = data_url(source, "png") if mode == "raw" else assets.put(source, "png")
                key = hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
                im = TraceImage(key, im.grid, im.offset, im.length, im.checksum, url=url)
            else:
                # hash-only keeps an image's pixels where it was shipped first only
                keep = mode == "full" or (mode == "hash-only" and im.mm_hash not in shipped)
                shipped.add(im.mm_hash)
                im = TraceImage(
                    im.mm_hash, im.grid, im.offset, im.length, im.checksum,
                    pixels=pixels.tobytes() if keep else None, shape=list(pixels.shape), source=source,
                )  # fmt: skip
            images.append(im)
        traces.append(Trace(r, r // group, np.asarray(tokens, dtype=np.int32).tobytes(), images))
    return traces


def run_stage_here(
    tmp: Path, mode: str, rederive_at: str = "orchestrator", dedup: bool = False, group: int = 1,
    plant: bool = False,
) -> tuple[orchestrator.OrchestratorResult, list[RankResult]]:  # fmt: skip
    path = tmp / "traces.bin"
    write_records(make_traces(tmp, mode, group=group), path)
    job = OrchestratorJob(str(path), str(tmp), MODEL, "float32", mode, rederive_at, 2, dedup, 0)
    orch = orchestrator.run(job)
    jobs = [
        TrainerJob(
            str(orchestrator.rank_path(tmp, r)),
            r,
            policy,
            MODEL,
            "float32",
            str(tmp / "assets"),
            plant=plant and policy == "lazy" and r == 0,
        )
        for policy in ("eager", "lazy")
        for r in range(2)
    ]
    results = [rank.run(job) for job in jobs]
    return orch, results


@pytest.mark.parametrize(("mode", "rederive_at"), CASES, ids=[f"{m}@{w}" for m, w in CASES])
def test_every_mode_trains_on_the_engines_pixels(tmp_path: Path, mode: str, rederive_at: str) -> None:
    # the lazy policy's rank 0 changes one pixel of its first image (the test hook): caught
    orch, results = run_stage_here(tmp_path, mode, rederive_at, plant=True)
    assert check(orch.expected, results[:2]) == (8, 0, "")  # 8 image slots, each used once (eager)
    checked, wrong, first = check(orch.expected, results)
    assert (checked, wrong) == (2 * 8, 1) and first.startswith("lazy rank 0: rollout")
    assert orch.samples == 4 and orch.micro_batches == 4 and sum(r.micro_batches for r in results) == 8
    assert sum(orch.bytes_per_rank) == sum(r.bytes_received for r in results[:2])
    pixels = PIXELS_PER_IMAGE
    refs = payload_of(mode, rederive_at) == REFS
    if refs:  # references on the wire; every rank derives the pixels, under both policies
        assert orch.pixel_bytes == 0 and sum(orch.bytes_per_rank) < 8 * pixels / 2
        assert [r.processor_runs for r in results] == [4, 4, 4, 4]
        assert orch.processor_runs == 0
    else:
        assert orch.pixel_bytes == 8 * pixels and sum(orch.bytes_per_rank) > 8 * pixels
        assert all(r.processor_runs == 0 for r in results)
        assert orch.processor_runs == (8 if mode == "ephemeral" else 0)
        assert orch.peak_bytes > 0
    assert all(r.disk_bytes_read > 0 for r in results) == (mode == "raw-file")
    eager, lazy = results[:2], results[2:]
    # eager holds the rank's whole step of pixels, lazy one micro-batch's
    assert [r.held_pixel_bytes for r in eager] == [4 * pixels, 4 * pixels]
    assert [r.held_pixel_bytes for r in lazy] == [2 * pixels, 2 * pixels]


def test_the_check_counts_a_slot_no_rank_used_and_an_unknown_checksum() -> None:
    used = [RankResult(0, "eager", 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0, [(0, 0, 5)])]
    assert check([(0, 0, 5), (0, 1, 6)], used)[:2] == (1, 1)  # image 1 never reached a rank
    assert check([(0, 0, None)], used)[:2] == (1, None)  # the engine reported none: unknown, not 0


def test_dedup_ships_a_groups_shared_image_once_per_rank(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain, _ = run_stage_here(tmp_path / "a", "full", group=4)
    dedup, results = run_stage_here(tmp_path / "b", "full", group=4, dedup=True)
    assert plain.unique_images == dedup.unique_images == 5  # 4 rollouts x 2 turns, turn 1 shared
    pixels = PIXELS_PER_IMAGE
    # 2 samples per rank: the shared image once on each rank instead of twice
    assert sum(plain.bytes_per_rank) - sum(dedup.bytes_per_rank) == pytest.approx(2 * pixels, rel=0.01)
    assert check(dedup.expected, results)[:2] == (16, 0)


def test_first_fit_packs_longest_first_and_never_mixes_incompatible_tensors() -> None:
    def sample(rollout: int, n: int, width: int) -> Sample:
        tensor = EncodedTensor("float32", [1, width], bytes(4 * width))
        ids = np.zeros(n, dtype=np.int32)
        return Sample(rollout, ids, ids.astype(np.int8), [(rollout, 0)], {"pixel_values": tensor})

    bins = first_fit([sample(0, 3, 8), sample(1, 6, 8), sample(2, 4, 8), sample(3, 4, 16)], 10)
    assert [[s.rollout for s in b] for b in bins] == [[1, 2], [3], [0]]
    mb = micro_batch(bins[0])
    assert mb.seq_lens == [6, 4] and mb.mm_kwargs["pixel_values"].shape == [2, 8]
    assert len(mb.mm_kwargs["pixel_values"].data) == 2 * 4 * 8


def test_traces_round_trip(tmp_path: Path) -> None:
    traces = make_traces(tmp_path, "hash-only", rollouts=2, group=2)
    write_records(traces, tmp_path / "t.bin")
    assert read_traces(tmp_path / "t.bin") == traces


def test_the_model_deals_the_images_as_the_orchestrator_does(tmp_path: Path) -> None:
    config = PointConfig(mode="full", rollouts=4, turns=2, image_size="64", model=MODEL, trainer="both")
    lay = layout(config)
    assert lay.bins_per_rank == [[[0], [2]], [[1], [3]]]
    orch, _ = run_stage_here(tmp_path, "full")
    pred = predict_trainer(config, 6000.0)
    assert pred.pixel_bytes == orch.pixel_bytes
    shipped = sum(orch.bytes_per_rank)
    assert pred.bytes_shipped is not None and abs(pred.bytes_shipped - shipped) / shipped < 0.01
    refs = predict_trainer(PointConfig(mode="raw", rollouts=4, turns=2, image_size="64", model=MODEL), 6000.0)
    assert (refs.eager_processor_runs, refs.lazy_processor_runs, refs.pixel_bytes) == (8, 8, 0)
    assert payload_of("ephemeral+hash-only", "orchestrator") == PIXELS


def test_group_members_share_their_first_turns_images_only() -> None:
    store = SourceStore(SourceSpec(32, 32, "png", "flat"), None, group_size=2)
    assert store.get(0, 0, 0) == store.get(1, 0, 0) != store.get(2, 0, 0)
    assert store.get(0, 1, 0) != store.get(1, 1, 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rederive_at": "trainer"}, "ephemeral modes only"),
        ({"trainer": "sometimes"}, "unknown trainer"),
        ({"trainer": "eager", "renderer": "renderers"}, "--renderer sim"),
        ({"dp_ranks": 0}, "dp_ranks"),
        ({"dedup": "yes"}, "unknown dedup"),
    ],
)
def test_the_stage_knobs_are_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(MmbenchError, match=message):
        PointConfig(**fields)  # type: ignore[arg-type]


def test_the_asset_store_takes_one_image_from_many_threads_at_once(tmp_path: Path) -> None:
    """A group's rollouts put the same first image at the same time (raw-file, G > 1)."""
    from concurrent.futures import ThreadPoolExecutor

    image = b"\x89PNG" + bytes(1 << 20)
    store = AssetStore(tmp_path)
    start = threading.Barrier(8)

    def put(_: int) -> str:
        start.wait()  # all at once
        return store.put(image, "png")

    with ThreadPoolExecutor(8) as pool:
        urls = set(pool.map(put, range(8)))
    assert len(urls) == 1 and store.bytes_written == len(image)
