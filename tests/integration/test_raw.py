"""The raw-media modes end to end against a real engine process: what the client keeps, what it
ships, what the engine preprocesses, and that the pixels the engine derives are right."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmbench.config import PointConfig
from mmbench.measure.accounting import account
from mmbench.measure.harness import measure_point, source_bytes_per_image
from mmbench.measure.model import predict
from mmbench.rollout import Totals
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec
from tests.conftest import EngineStarter
from tests.helpers import RAW_MODES, run_world

slow = pytest.mark.slow

K, N = 2, 3
TOKENS = get_geometry("qwen3-vl").layout(64, 64).tokens


def point(mode: str, **kw: object) -> PointConfig:
    return PointConfig(mode=mode, rollouts=K, turns=N, image_size="64", **kw)  # type: ignore[arg-type]


@slow
@pytest.mark.parametrize("mode", RAW_MODES)
def test_the_client_keeps_media_urls_and_token_streams_only(
    engine_factory: EngineStarter, mode: str, tmp_path: Path
) -> None:
    config = point(mode)
    engine = engine_factory(allowed_media_dir=str(tmp_path))
    trajs = run_world(config, engine.url, asset_dir=tmp_path)
    totals = Totals.of(trajs)
    assert totals.failed_rollouts == 0, totals.failures
    assert totals.wrong_results == 0
    assert (totals.cache_hits, totals.cache_misses, totals.rederived) == (0, 0, 0)  # no image processor
    for traj in trajs:
        conv = traj.conversation
        assert conv.sources == [] and len(conv.media) == N
        if mode == "raw":
            assert all(u.startswith("data:image/png;base64,") for u in conv.media)
        else:
            assert all(
                u.startswith("file://") and Path(u[len("file://") :]).parent == tmp_path for u in conv.media
            )
        per_turn = config.text_tokens_per_turn + config.completion_tokens
        assert len(conv.rendered) == N * (per_turn + 1)  # one <|image_pad|> per image
        assert len(conv.tokens) == N * (per_turn + TOKENS)  # expanded by the engine
        for t, step in enumerate(traj.steps, start=1):
            assert len(step.sidecar) == 0
            assert step.placeholders is not None and [p.length for p in step.placeholders] == [TOKENS] * t
            assert step.prompt_len == len(conv.tokens) - (N - t + 1) * config.completion_tokens - (N - t) * (
                config.text_tokens_per_turn + TOKENS
            )
    ledger = account(trajs, [])
    assert ledger.stored_pixel_bytes == 0
    expected = sum(len(u) for t in trajs for u in t.conversation.media)
    assert expected < ledger.source_bytes < expected + 100 * K * N


@slow
@pytest.mark.parametrize("mode", RAW_MODES)
def test_every_turn_ships_every_image_and_the_engine_preprocesses_each_once(
    engine_factory: EngineStarter, mode: str, tmp_path: Path
) -> None:
    config = point(mode)
    engine = engine_factory(allowed_media_dir=str(tmp_path))
    totals = Totals.of(run_world(config, engine.url, asset_dir=tmp_path))
    stats = engine.stats()
    assert totals.requests == K * N and totals.wrong_results == 0
    assert totals.media_items_sent == K * N * (N + 1) // 2
    assert totals.full_items_sent == totals.null_items_sent == 0
    assert stats.bytes_received == totals.bytes_shipped
    assert stats.preprocess_calls == K * N  # each distinct image once
    assert stats.cache_hits == totals.media_items_sent - K * N
    per_image = source_bytes_per_image(SourceSpec(64, 64, "png", "photo", 0))
    pred = predict(config, per_image)
    assert pred.engine_preprocess_calls == K * N
    if mode == "raw":  # (raw-file's URLs hold the asset directory's path: the harness's one is modelled)
        assert totals.bytes_shipped == pytest.approx(pred.bytes_shipped, rel=0.02)
    else:
        assert len(list(tmp_path.glob("*.png"))) == K * N  # written once per distinct image


@slow
def test_without_an_engine_cache_every_image_of_every_request_is_preprocessed(
    engine_factory: EngineStarter,
) -> None:
    config = point("raw", engine_cache_gb=0.0)
    engine = engine_factory(cache_bytes=0)
    totals = Totals.of(run_world(config, engine.url))
    assert totals.wrong_results == 0 and totals.failed_rollouts == 0
    assert engine.stats().preprocess_calls == totals.media_items_sent == K * N * (N + 1) // 2
    assert predict(config, 1000.0).engine_preprocess_calls == K * N * (N + 1) // 2


@slow
def test_a_raw_file_point_reports_its_assets_time_and_preprocessing() -> None:
    record = measure_point(PointConfig(mode="raw-file", rollouts=K, turns=N, image_size="64"))
    assert record.status == "ok", record.cause
    assert record.traffic.wrong_results == 0
    assert record.traffic.asset_disk_bytes == pytest.approx(
        K * N * record.prediction.source_bytes_per_image, rel=0.05
    )  # type: ignore[operator]
    assert record.engine.figures.preprocess_calls == record.prediction.engine_preprocess_calls == K * N
    assert record.client.rendering.cache_misses == 0
    assert record.client.cpu_s is not None and record.client.cpu_s > 0
    assert record.engine.figures.cpu_s is not None and record.engine.figures.cpu_s > 0
    lat = (record.traffic.latency_p50_s, record.traffic.latency_p95_s, record.traffic.latency_max_s)
    assert all(x is not None for x in lat)
    assert 0 < lat[0] <= lat[1] <= lat[2]  # type: ignore[operator]
    assert record.prediction.shipped_ratio == pytest.approx(1.0, abs=0.02)
    # raw-file ships the references: a few hundred bytes per image per request
    assert record.traffic.bytes_shipped < 1000 * (record.traffic.media_items_sent or 0) + 4096 * K * N  # type: ignore[operator]
