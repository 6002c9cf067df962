"""The renderers library as the backend, end to end against a real engine process (issue 11).

Tiny points (64x64 sources, which qwen3-vl pads to 256x256: 64 image tokens; K=2, 2 turns): the
library's world and the sim's world run the same point on the same sources, and what the renderer
produced must be equal (image tokens, grids, hashes), what each ships within 1 %, and every result
right. In-process, so the library is imported once.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "renderers", reason="the renderers extra is not installed (pip install 'mmbench[renderers]')"
)

from mmbench.backends.renderers.backend import LibraryBackend
from mmbench.backends.renderers.state import Chat, LibraryStep
from mmbench.config import PointConfig
from mmbench.measure.accounting import account
from mmbench.measure.fingerprint import fingerprint
from mmbench.rollout import RolloutDriver, Totals, Trajectory
from mmbench.transports import make_transport
from mmbench.world.geometry import get_geometry
from mmbench.world.wire import IMAGE_PAD_TOKEN
from tests.conftest import EngineStarter
from tests.helpers import run_world

slow = pytest.mark.slow
LAYOUT = get_geometry("qwen3-vl").layout(64, 64)
K, N = 2, 2


MODELS = ["qwen3-vl", "qwen3.5", "qwen3.6", "kimi-k2.5"]  # each with the library's own renderer class


def point(mode: str, **kw: object) -> PointConfig:
    return PointConfig(mode=mode, rollouts=K, turns=N, image_size="64", renderer="renderers", **kw)  # type: ignore[arg-type]


def run_library(config: PointConfig, url: str) -> tuple[RolloutDriver, list[Trajectory]]:
    world = RolloutDriver(config, make_transport(config.mode, config.sent_hashes_max), backend=LibraryBackend)
    world.warm_up()
    trajectories = world.run(url)
    for t in trajectories:
        t.counters.wrong_results += world.count_wrong_media(world.media_checks([t]))
    return world, trajectories


@slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", ["full", "ephemeral", "hash-only", "raw"])
def test_library_world_against_the_sim_on_the_same_point(
    engine_factory: EngineStarter, mode: str, model: str
) -> None:
    world, lib = run_library(point(mode, model=model), engine_factory().url)
    sim = run_world(
        PointConfig(mode=mode, rollouts=K, turns=N, image_size="64", model=model), engine_factory().url
    )
    layout = get_geometry(model).layout(64, 64)
    got, want = Totals.of(lib), Totals.of(sim)
    assert got.failed_rollouts == 0, got.failures
    assert got.wrong_results == 0
    assert (got.requests, got.full_items_sent, got.null_items_sent, got.media_items_sent) == (
        want.requests, want.full_items_sent, want.null_items_sent, want.media_items_sent,
    )  # fmt: skip
    # the same pixels' bytes and the same sources; only the prompts' token lists differ (template)
    assert abs(got.bytes_shipped / want.bytes_shipped - 1) < 0.01
    a, b = fingerprint(lib), fingerprint(sim)
    assert (a.image_tokens, a.pixel_shapes, a.sidecar_digest) == (
        b.image_tokens,
        b.pixel_shapes,
        b.sidecar_digest,
    )
    # processed: the prompt's placeholders (Kimi: one per image); raw: the engine's expansion
    per_image = layout.placeholder_tokens if mode != "raw" else layout.tokens
    assert a.image_tokens == K * N * per_image
    # the chat template's own tokens; the thinking templates (Qwen3.5/3.6 and Kimi K2.5 by default)
    # drop an answer that never closes its </think> (the engine's are random ids) from the history,
    # so there the template's tokens can just balance the completions dropped (Qwen3.5 here: equal)
    assert a.prompt_tokens > b.prompt_tokens if model == "qwen3-vl" else a.prompt_tokens >= b.prompt_tokens
    for traj in lib:
        assert isinstance(traj.conversation, Chat)
        assert [m["role"] for m in traj.conversation.messages] == ["user", "assistant"] * N
        assert all(isinstance(s, LibraryStep) for s in traj.steps)
    ledger, sim_ledger = account(lib, world.cached_items()), account(sim, [])
    assert ledger.source_bytes == sim_ledger.source_bytes
    assert ledger.stored_pixel_bytes == sim_ledger.stored_pixel_bytes


@slow
def test_kimi_keeps_one_media_pad_per_image_and_items_under_grid_thws(engine_factory: EngineStarter) -> None:
    _, trajs = run_library(point("full", model="kimi-k2.5"), engine_factory().url)
    layout = get_geometry("kimi-k2.5").layout(64, 64)
    last = trajs[0].steps[-1]
    assert isinstance(last, LibraryStep) and last.prompt is not None
    mm = last.prompt.multi_modal_data
    assert mm is not None
    assert [p.length for p in mm.mm_placeholders["image"]] == [1] * N
    assert last.prompt.token_ids.count(IMAGE_PAD_TOKEN) == N  # <|media_pad|>, unexpanded
    for item in mm.mm_items["image"]:
        assert sorted(item) == ["grid_thws", "pixel_values"]
        assert item["pixel_values"].shape == layout.pixel_shape == (36, 3, 14, 14)
        assert item["grid_thws"].tolist() == [[1, 6, 6]]


@slow
def test_full_keeps_the_librarys_objects_and_bridges_later_turns(engine_factory: EngineStarter) -> None:
    _, trajs = run_library(point("full"), engine_factory().url)
    steps = trajs[0].steps
    first, second = (s.prompt for s in steps if isinstance(s, LibraryStep))
    assert first is not None and second is not None
    mm1, mm2 = first.multi_modal_data, second.multi_modal_data
    assert mm1 is not None and mm2 is not None
    # the bridge copies the lists and shares the first image's arrays
    assert mm2.mm_items["image"][0]["pixel_values"] is mm1.mm_items["image"][0]["pixel_values"]
    assert second.token_ids[: len(first.token_ids)] == first.token_ids
    assert second.token_ids.count(IMAGE_PAD_TOKEN) == 2 * LAYOUT.tokens
    # per-token lists, as the library returns them
    assert len(second.sampled_mask) == len(second.message_indices) == len(second.token_ids)
    counters = Totals.of(trajs)
    assert (counters.cache_misses, counters.cache_hits) == (K * N, 0)


@slow
def test_ephemeral_keeps_no_pixels_and_rederives_them_through_the_library(
    engine_factory: EngineStarter,
) -> None:
    world, trajs = run_library(point("ephemeral", image_cache_max=1), engine_factory().url)
    totals = Totals.of(trajs)
    assert totals.wrong_results == 0 and totals.failed_rollouts == 0
    assert totals.rederived == K * (N - 1)  # turn 2 re-derives turn 1's image
    ledger = account(trajs, world.cached_items())
    assert ledger.stored_pixel_bytes == 0
    assert ledger.renderer_cache_only_bytes == LAYOUT.pixel_bytes()  # one cache of one entry


@slow
@pytest.mark.parametrize("model", MODELS)
def test_raw_goes_through_the_librarys_client_and_keeps_its_result(
    engine_factory: EngineStarter, model: str
) -> None:
    engine = engine_factory()
    _, trajs = run_library(point("raw", model=model), engine.url)
    LAYOUT = get_geometry(model).layout(64, 64)
    step = trajs[0].steps[-1]
    assert isinstance(step, LibraryStep) and step.result is not None
    result = step.result
    assert result["renderer_prompt_ids"].count(IMAGE_PAD_TOKEN) == N  # one pad per image, unexpanded
    assert result["prompt_ids"].count(IMAGE_PAD_TOKEN) == N * LAYOUT.tokens  # the engine's expansion
    assert [p["length"] for p in result["mm_placeholders"]["image"]] == [LAYOUT.tokens] * N
    assert result["completion_logprobs"] == step.logprobs
    assert engine.stats().bytes_received == Totals.of(trajs).bytes_shipped
