"""mmbench.analysis.ledger on hand-made records: the parts, what they add up to, the checks, medians over
repeats, and the engine-cache trade-off with its ideal and full lines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mmbench.analysis.ledger import (
    TOLERANCE,
    Check,
    cache_tradeoffs,
    ledger,
    lines,
    median_ledger,
)
from mmbench.config import PointConfig
from mmbench.measure.model import predict
from mmbench.results import PointRecord
from mmbench.units import MIB
from tests.helpers import flat_record

SOURCE = 550_000.0  # bytes per encoded source image


def point(
    mode: str = "full", k: int = 8, repeat: int = 0, status: str = "ok", **measured: Any
) -> PointRecord:
    """Client: 400 MiB of pixels, 30 of sources, 1 of descriptors, 2 of tokens, 10 only in the
    renderer caches (443 MiB held); live RSS 445, raw 700, peak 1000. Engine: baseline 50 MiB, RSS
    at the end 500 (450 above), cache 430, peak 600."""
    config_keys = {"engine_cache_gb", "turns", "image_size", "engine_evict_rate"}
    config = PointConfig(
        mode=mode, rollouts=k, **{key: v for key, v in measured.items() if key in config_keys}
    )
    values: dict[str, Any] = {
        "stored_pixel_bytes": 400 * MIB,
        "source_bytes": 30 * MIB,
        "descriptor_bytes": 1 * MIB,
        "other_bytes": 2 * MIB,
        "renderer_cache_only_bytes": 10 * MIB,
        "renderer_cache_bytes": 10 * MIB,
        "live_data_bytes": 443 * MIB,
        "retained_live_bytes": 445 * MIB,
        "retained_bytes": 700 * MIB,
        "allocator_retention_bytes": 255 * MIB,
        "peak_bytes": 1000 * MIB,
        "engine_cache_bytes": 430 * MIB,
        "engine_rss_bytes": 500 * MIB,
        "engine_rss_baseline_bytes": 50 * MIB,
        "engine_peak_rss_bytes": 600 * MIB,
        "bytes_shipped": 100 * MIB,
        "fallbacks": 0,
        "source_bytes_per_image": SOURCE,
    }
    values.update({key: v for key, v in measured.items() if key not in config_keys})
    return flat_record(**config.to_dict(), repeat=repeat, status=status, **values)


# --- the parts ---


def test_parts_are_the_record_fields() -> None:
    lg = ledger(point())
    assert (lg.pixels, lg.sources, lg.descriptors, lg.tokens) == (400 * MIB, 30 * MIB, 1 * MIB, 2 * MIB)
    assert lg.renderer_caches == 10 * MIB
    assert lg.engine_cache == 430 * MIB and lg.engine_baseline == 50 * MIB


def test_derived_parts_by_hand() -> None:
    lg = ledger(point())
    assert lg.trajectories == 433 * MIB
    assert lg.client_data == 443 * MIB
    assert lg.client_unaccounted == 2 * MIB
    assert lg.allocator_retention == 255 * MIB  # raw - live
    assert lg.client_transient == 300 * MIB  # peak - raw
    assert lg.engine_above_baseline == 450 * MIB
    assert lg.engine_other == 20 * MIB
    assert lg.engine_peak_above_baseline == 550 * MIB
    assert lg.total == 700 * MIB + 450 * MIB
    assert lg.total_live == 445 * MIB + 450 * MIB
    assert lg.total_with(100) == 100 + 450 * MIB


def test_the_parts_add_up_to_the_readings() -> None:
    lg = ledger(point())
    assert lg.client_data == point().client.accounting.live_data_bytes  # the accounting's own sum
    assert lg.client_data + lg.client_unaccounted == lg.client_live  # type: ignore[operator]
    assert lg.client_live + lg.allocator_retention == lg.client_retained  # type: ignore[operator]
    assert lg.client_retained + lg.client_transient == lg.client_peak  # type: ignore[operator]
    assert lg.engine_cache + lg.engine_other == lg.engine_above_baseline  # type: ignore[operator]
    assert lg.total == lg.client_retained + lg.engine_above_baseline  # type: ignore[operator]


def test_missing_readings_give_none_not_a_wrong_sum() -> None:
    lg = ledger(point(engine_rss_baseline_bytes=None, descriptor_bytes=None))
    assert lg.engine_above_baseline is None and lg.engine_other is None and lg.total is None
    assert lg.trajectories is None and lg.client_data is None and lg.client_check is None
    assert lg.engine_check is None and lg.checks == ()
    assert lg.allocator_retention == 255 * MIB  # what does not depend on them is still there


def test_an_unmeasured_record_has_an_empty_ledger() -> None:
    config = PointConfig(mode="full", rollouts=2)
    lg = ledger(flat_record(**config.to_dict(), status="skipped", cause="too big"))
    assert lg.empty
    assert all(line.value is None for line in lines(lg))


# --- the checks ---


def test_checks_compare_data_with_rss_in_each_process() -> None:
    client, engine = ledger(point()).checks
    assert (client.process, client.data, client.measured) == ("client", 443 * MIB, 445 * MIB)
    assert client.ratio == pytest.approx(443 / 445) and client.ok
    assert (engine.process, engine.data, engine.measured) == ("engine", 430 * MIB, 450 * MIB)
    assert engine.ratio == pytest.approx(430 / 450) and engine.ok


@pytest.mark.parametrize(
    ("data", "measured", "ok"),
    [(95, 100, True), (105, 100, True), (94, 100, False), (106, 100, False), (0, 0, False), (5, -1, False)],
)
def test_check_tolerance_is_five_percent_either_way(data: int, measured: int, ok: bool) -> None:
    assert TOLERANCE == 0.05
    assert Check("client", data, measured).ok is ok


def test_check_text_says_within_or_outside() -> None:
    assert Check("engine", 59, 100).text() == "engine: data / RSS = 0.590 (outside 5%)"
    assert Check("client", 100, 100).text() == "client: data / RSS = 1.000 (within 5%)"
    assert Check("client", 1, 0).text() == "client: nothing measured"


def test_lines_carry_the_checks_on_the_readings_they_compare() -> None:
    lg = ledger(point())
    checked = {line.label: line.check for line in lines(lg) if line.check is not None}
    assert checked == {
        "client retained, live (RSS)": lg.client_check,
        "engine RSS above its baseline": lg.engine_check,
    }
    labels = [line.label for line in lines(lg)]
    assert labels[0] == "trajectories: pixel_values" and labels[-2].startswith("system total")
    assert {line.process for line in lines(lg)} == {"client", "engine", "system"}


def test_to_dict_has_readings_derived_parts_and_checks() -> None:
    data = ledger(point()).to_dict()
    assert data["pixels"] == 400 * MIB and data["total"] == 1150 * MIB
    assert data["checks"]["engine"]["ratio"] == pytest.approx(430 / 450)
    assert data["checks"]["client"]["ok"] is True


# --- over repeats ---


def test_median_ledger_takes_each_parts_median_over_repeats() -> None:
    reps = [point(repeat=i, retained_bytes=v * MIB, engine_rss_bytes=e * MIB)
            for i, (v, e) in enumerate(((700, 500), (900, 520), (800, 480)))]  # fmt: skip
    lg = median_ledger(reps)
    assert lg is not None
    assert lg.client_retained == 800 * MIB and lg.engine_rss == 500 * MIB
    assert lg.pixels == 400 * MIB
    assert median_ledger([]) is None


def test_median_ledger_skips_missing_readings() -> None:
    lg = median_ledger([point(engine_rss_baseline_bytes=None), point(repeat=1)])
    assert lg is not None and lg.engine_baseline == 50 * MIB


# --- the engine-cache trade-off ---


def tradeoff_points(**common: Any) -> list[PointRecord]:
    out = []
    for mode in ("full", "hash-only", "ephemeral+hash-only"):
        for gb, shipped, fb, cache in ((0.0, 900, 8, 0), (0.1, 300, 2, 100), (1.0, 100, 0, 384)):
            out.append(
                point(mode, engine_cache_gb=gb, bytes_shipped=shipped * MIB, fallbacks=fb,
                      engine_cache_bytes=cache * MIB, turns=8, image_size="512", **common)
            )  # fmt: skip
    return out


def test_tradeoff_has_the_hash_only_modes_against_engine_cache_gb() -> None:
    (trade,) = cache_tradeoffs(tradeoff_points())
    assert trade.modes == ("hash-only", "ephemeral+hash-only")  # full uses no engine cache
    assert trade.cache_gb == (0.0, 0.1, 1.0)
    assert trade.params == ()
    p = trade.at("hash-only", 0.1)
    assert p is not None and p.bytes_shipped.median == 300 * MIB
    assert p.fallbacks is not None and p.fallbacks.median == 2
    assert p.engine_cache_bytes is not None and p.engine_cache_bytes.median == 100 * MIB
    assert trade.at("full", 0.1) is None


def test_tradeoff_ideal_and_full_lines_are_the_model() -> None:
    (trade,) = cache_tradeoffs(tradeoff_points())
    config = PointConfig(mode="hash-only", rollouts=8, turns=8, image_size="512")
    # the ideal: each distinct image shipped once, as with an engine cache that holds every one
    assert trade.ideal_bytes_shipped == predict(config, SOURCE).bytes_shipped
    assert predict(replace(config, engine_cache_gb=0.1), SOURCE).bytes_shipped > trade.ideal_bytes_shipped
    assert trade.full_bytes_shipped == predict(replace(config, mode="full"), SOURCE).bytes_shipped
    assert trade.full_bytes_shipped > trade.ideal_bytes_shipped  # type: ignore[operator]
    # 64 distinct 512x512 images (6 MiB of float32 pixels each) is the engine's working set
    assert trade.working_set_bytes == pytest.approx(64 * 6 * MIB, rel=0.001)


def test_tradeoff_ideal_ignores_faults() -> None:
    faulty = cache_tradeoffs(tradeoff_points(engine_evict_rate=0.2))
    clean = cache_tradeoffs(tradeoff_points())
    assert faulty[0].ideal_bytes_shipped == clean[0].ideal_bytes_shipped


def test_no_tradeoff_without_two_cache_sizes_or_without_ok_points() -> None:
    assert cache_tradeoffs([r for r in tradeoff_points() if r.config.engine_cache_gb == 1.0]) == []
    failed = [replace(r, status="failed") for r in tradeoff_points()]
    assert cache_tradeoffs(failed) == []


def test_tradeoff_per_setting_of_the_other_parameters() -> None:
    records = tradeoff_points() + [
        replace(r, config=replace(r.config, rollouts=4)) for r in tradeoff_points()
    ]
    trades = cache_tradeoffs(records)
    assert [t.params for t in trades] == [(("rollouts", 8),), (("rollouts", 4),)]
    assert trades[1].title == "rollouts=4"
