"""mmbench.results: PointRecord/ResultsFile round trips, files on disk, load errors and the golden."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

import mmbench.results as results_mod
from mmbench.config import LATER_FIELDS, PointConfig, field_names
from mmbench.errors import MmbenchError
from mmbench.migrations import V5_KIND_PEAKS, V5_PATHS
from mmbench.results import (
    CSV_COLUMNS,
    POINTS_LOG,
    RESULTS_CSV,
    RESULTS_JSON,
    SCHEMA_VERSION,
    PointRecord,
    ResultsFile,
    append_point,
    atomic_write,
    load,
    read_points_log,
    save,
    to_json,
)
from tests.helpers import flat_record

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v6.json"
# a v6 file written before the trainer stage's parameters and section were added (issue 31)
GOLDEN_V6_EARLY = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v6_before_trainer.json"
GOLDEN_V5 = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v5.json"
GOLDEN_V4 = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v4.json"
GOLDEN_V3 = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v3.json"
GOLDEN_V2 = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v2.json"
GOLDEN_V1 = Path(__file__).resolve().parent.parent / "golden" / "results_schema_v1.json"

# Fixed so that the golden file does not depend on the machine or on PointConfig defaults.
ENVIRONMENT: dict[str, Any] = {
    "cpu_count": 2,
    "glibc": "glibc 2.36",
    "mmbench": "0.1.0",
    "platform": "Linux-x86_64",
    "python": "3.11.9",
}
SCENARIO: dict[str, Any] = {"name": "golden", "repeats": 1}

GOLDEN_REQUIRED = [
    "config.mode",
    "config.model",
    "config.image_size",
    "config.turns",
    "config.images_per_turn",
    "config.rollouts",
    "repeat",
    "status",
    "client.rss.baseline_bytes",
    "client.rss.peak_bytes",
    "client.rss.retained_bytes",
    "client.rss.retained_trimmed_bytes",
    "client.rss.released_bytes",
    "client.retained_bytes",
    "client.retained_live_bytes",
    "client.allocator_retention_bytes",
    "client.peak_bytes",
    "prediction.retained_bytes",
    "client.accounting.stored_pixel_bytes",
    "client.accounting.source_bytes",
    "traffic.bytes_shipped",
    "prediction.bytes_shipped",
    "traffic.requests",
    "traffic.full_items_sent",
    "traffic.null_items_sent",
    "traffic.fallbacks",
    "traffic.wrong_results",
    "engine.figures.rss_bytes",
    "engine.figures.cache_bytes",
    "timing.wall_s",
]
# A point's sections, in the order its JSON reads.
SECTIONS = [
    "config",
    "repeat",
    "status",
    "cause",
    "client",
    "traffic",
    "engine",
    "trainer",
    "prediction",
    "timing",
    "machine",
]


def _config(**overrides: Any) -> PointConfig:
    """Every field spelled out, so that a change of a default does not move the golden."""
    values: dict[str, Any] = {
        "mode": "full",
        "rollouts": 4,
        "turns": 3,
        "images_per_turn": 1,
        "image_size": "512",
        "model": "qwen3-vl",
        "image_format": "png",
        "content": "photo",
        "pool_size": 1,
        "image_cache_max": 32,
        "engine_cache_gb": 4.0,
        "engine_max_body_mb": 2048,
        "sent_hashes_max": 16_384,
        "codec": "fast",
        "text_tokens_per_turn": 32,
        "completion_tokens": 16,
        "seed": 0,
        "engine_evict_rate": 0.0,
        "engine_restart_every": 0,
        "engine_error_rate": 0.0,
        "engine_delay_ms": 0.0,
        "retry_budget": 8,
        "max_inflight_builds": 0,
        "trim_after_build": "off",
        "malloc_arena_max": 0,
        "malloc_mmap_threshold": 0,
        "dtype": "float32",
        "renderer": "sim",
        "tokenizer": "",
        "engine_args": "",
        "trainer": "off",
        "rederive_at": "orchestrator",
        "dp_ranks": 2,
        "group_size": 1,
        "dedup": "off",
        "seq_len": 0,
        "model_parallel": 8,
        "replicas": 0,
        "router": "vllm-router",
        "router_policy": "cache_aware",
        "session_header": "off",
        "router_retries": "on",
        "kill_replica_at_turn": 0,
    }
    values.update(overrides)
    assert set(values) == set(field_names())  # a new config field must be added here too
    return PointConfig(**values)


def _record(config: PointConfig | None = None, repeat: int = 0, **measured: Any) -> PointRecord:
    config = config or _config()
    fields_: dict[str, Any] = {
        "status": "ok",
        "rss_baseline_bytes": 50_000_000,
        "rss_peak_bytes": 200_000_000,
        "rss_retained_bytes": 140_000_000,
        "rss_retained_trimmed_bytes": 130_000_000,
        "rss_released_bytes": 60_000_000,
        "rss_released_trimmed_bytes": 52_000_000,
        "uss_retained_bytes": 120_000_000,
        "peak_method": "vmhwm",
        "retained_bytes": 90_000_000,
        "retained_live_bytes": 80_000_000,
        "allocator_retention_bytes": 10_000_000,
        "peak_bytes": 150_000_000,
        "released_bytes": 2_000_000,
        "stored_pixel_bytes": 75_497_472,
        "source_bytes": 3_600_000,
        "descriptor_bytes": 12_345,
        "other_bytes": 6_789,
        "renderer_cache_bytes": 0,
        "renderer_cache_only_bytes": 0,
        "live_data_bytes": 79_116_606,
        "bytes_shipped": 201_326_592,
        "bytes_per_turn": [33_554_432, 67_108_864, 100_663_296],
        "requests": 12,
        "full_items_sent": 24,
        "null_items_sent": 0,
        "fallbacks": 0,
        "wrong_results": 0,
        "failed_rollouts": 0,
        "renderer_cache_hits": 0,
        "renderer_cache_misses": 12,
        "rederived": 0,
        "engine_rss_bytes": 300_000_000,
        "engine_cache_bytes": 75_497_472,
        "engine_cache_items": 12,
        "engine_bytes_received": 201_000_000,
        "engine_cache_hits": 12,
        "engine_cache_misses": 12,
        "engine_errors": 0,
        "source_bytes_per_image": 300_000.5,
        "predicted_retained_bytes": 79_000_000,
        "predicted_bytes_shipped": 201_000_000,
        "predicted_peak_bytes": 400_000_000,
        "retained_ratio": 1.0126,
        "shipped_ratio": 1.0016,
        "env_malloc_mmap_threshold": None,
        "env_malloc_arena_max": "2",
        "glibc": "glibc 2.36",
        "memray_peak_bytes": None,
        "wall_s": 3.25,
        "rollout_wall_s": 2.5,
    }
    fields_.update(measured)
    return flat_record(**config.to_dict(), repeat=repeat, **fields_)


def _results() -> ResultsFile:
    return ResultsFile(
        dict(ENVIRONMENT),
        dict(SCENARIO),
        [
            _record(),
            _record(
                _config(mode="ephemeral", image_size="256", codec="stdlib"),
                repeat=1,
                status="failed",
                cause="engine returned 500",
                bytes_per_turn=[1, 2],
                wall_s=0.5,
            ),
        ],
    )


def _write_results_json(directory: Path, data: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_JSON
    path.write_text(json.dumps(data))
    return path


def _valid_dict() -> dict[str, Any]:
    return json.loads(to_json(_results()))


# --- records and round trips ------------------------------------------------------------------


def test_record_dict_round_trip() -> None:
    record = _record()
    data = record.to_dict()
    assert data["config"]["mode"] == "full" and data["repeat"] == 0 and data["status"] == "ok"
    assert data["traffic"]["bytes_per_turn"] == [33_554_432, 67_108_864, 100_663_296]
    assert data["client"]["rss"]["peak_bytes"] == 200_000_000
    back = PointRecord.from_dict(data)
    assert back == record
    assert back.config == _config()
    assert back.ok
    assert back.key() == (*_config().to_dict().values(), 0)


def test_record_round_trip_through_json_text() -> None:
    record = _record(_config(engine_cache_gb=0.5, image_size="1200x300"), repeat=3, status="skipped")
    back = PointRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert back == record
    assert not back.ok
    assert back.config.image_wh == (1200, 300)


def test_save_then_load_gives_equal_results(tmp_path: Path) -> None:
    results = _results()
    save(tmp_path, results)
    assert load(tmp_path) == results
    # load also takes the results.json path itself
    assert load(tmp_path / RESULTS_JSON) == results
    assert load(str(tmp_path)) == results


def test_results_json_reads_top_down_indented_and_deterministic(tmp_path: Path) -> None:
    save(tmp_path / "a", _results())
    save(tmp_path / "b", _results())
    first = (tmp_path / "a" / RESULTS_JSON).read_bytes()
    assert first == (tmp_path / "b" / RESULTS_JSON).read_bytes()
    save(tmp_path / "a", _results())  # overwriting gives the same bytes again
    assert (tmp_path / "a" / RESULTS_JSON).read_bytes() == first
    text = first.decode()
    assert text.endswith("}\n")
    assert text.startswith('{\n  "schema_version": 6,')  # indent 2; what the file is, first
    data = json.loads(text)
    assert list(data) == ["schema_version", "environment", "scenario", "points"]
    assert list(data["environment"]) == sorted(data["environment"])
    point = data["points"][0]
    assert list(point) == SECTIONS  # a handful of sections, one per concern, in reading order
    assert list(point["client"])[:5] == [
        "retained_bytes",
        "retained_live_bytes",
        "allocator_retention_bytes",
        "peak_bytes",
        "released_bytes",
    ]
    assert data["schema_version"] == SCHEMA_VERSION


def test_results_csv_header_and_rows(tmp_path: Path) -> None:
    results = _results()
    save(tmp_path, results)
    text = (tmp_path / RESULTS_CSV).read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_COLUMNS
    assert len(rows) == 1 + len(results.points)
    assert sum(1 for r in rows if r == CSV_COLUMNS) == 1
    records = [dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]]
    assert records[0]["traffic.bytes_per_turn"] == "33554432;67108864;100663296"
    assert records[1]["traffic.bytes_per_turn"] == "1;2"
    assert records[0]["config.mode"] == "full" and records[1]["config.mode"] == "ephemeral"
    assert records[1]["cause"] == "engine returned 500"
    assert records[0]["cause"] == ""  # None is an empty cell
    assert records[1]["repeat"] == "1"
    assert records[0]["client.rss.peak_bytes"] == "200000000"


def test_csv_columns_are_the_record_figures_dotted() -> None:
    assert list(_record().flat()) == CSV_COLUMNS
    assert len(CSV_COLUMNS) == len(set(CSV_COLUMNS))
    assert "client.rss.peak_bytes" in CSV_COLUMNS and "engine.figures.cache_hits" in CSV_COLUMNS


def test_the_dataframe_has_the_dotted_columns(tmp_path: Path) -> None:
    from mmbench.api import load_results

    save(tmp_path, _results())
    frame = load_results(tmp_path)
    assert list(frame.columns) == CSV_COLUMNS
    assert frame["client.retained_live_bytes"].tolist() == [80_000_000, 80_000_000]
    assert frame["config.mode"].tolist() == ["full", "ephemeral"]


# --- load errors ------------------------------------------------------------------------------


def _load_error(path: Path | str) -> MmbenchError:
    with pytest.raises(MmbenchError) as info:
        load(path)
    err = info.value
    assert err.exit_code == 2
    message = str(err)
    assert message and "\n" not in message
    return err


def test_load_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    err = _load_error(missing)
    assert str(missing) in str(err)
    assert "no results" in str(err)


def test_load_directory_without_results_json(tmp_path: Path) -> None:
    (tmp_path / RESULTS_CSV).write_text("mode\n")
    err = _load_error(tmp_path)
    assert "no results" in str(err)


def test_load_truncated_json(tmp_path: Path) -> None:
    save(tmp_path, _results())
    path = tmp_path / RESULTS_JSON
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    err = _load_error(tmp_path)
    assert "not valid JSON" in str(err)
    assert RESULTS_JSON in str(err)


def test_load_non_utf8(tmp_path: Path) -> None:
    (tmp_path / RESULTS_JSON).write_bytes(b'{"schema_version": 1, "x": "\xff\xfe"}')
    assert "not valid JSON" in str(_load_error(tmp_path))


def test_load_json_list(tmp_path: Path) -> None:
    _write_results_json(tmp_path, [_valid_dict()])
    assert "no schema_version" in str(_load_error(tmp_path))


def test_load_without_schema_version(tmp_path: Path) -> None:
    data = _valid_dict()
    del data["schema_version"]
    _write_results_json(tmp_path, data)
    assert "no schema_version" in str(_load_error(tmp_path))


def test_load_newer_schema_says_upgrade(tmp_path: Path) -> None:
    data = _valid_dict()
    data["schema_version"] = 999
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "999" in message
    assert "upgrade" in message


def test_load_older_schema_says_rerun(tmp_path: Path) -> None:
    data = _valid_dict()
    data["schema_version"] = 0
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "schema_version 0" in message
    assert "upgrade" not in message
    assert "re-run" in message


@pytest.mark.parametrize("version", [True, 1.0])
def test_load_rejects_a_non_int_schema_version(tmp_path: Path, version: Any) -> None:
    data = _valid_dict()
    data["schema_version"] = version
    _write_results_json(tmp_path, data)
    assert "schema_version" in str(_load_error(tmp_path))


def test_load_points_not_a_list(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"] = {"0": data["points"][0]}
    _write_results_json(tmp_path, data)
    assert "'points' must be a list" in str(_load_error(tmp_path))


def test_load_point_with_unknown_field(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][1]["gpu_bytes"] = 1
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "point 1" in message
    assert "'gpu_bytes'" in message


def test_load_point_with_unknown_nested_field(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][0]["client"]["rss"]["gpu_bytes"] = 1
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "'client.rss.gpu_bytes'" in message and "newer mmbench" in message


def test_load_point_with_a_figure_of_the_wrong_type(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][0]["traffic"]["bytes_shipped"] = "many"
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "point 0" in message and "traffic.bytes_shipped" in message


def test_load_point_missing_config_field(tmp_path: Path) -> None:
    data = _valid_dict()
    del data["points"][0]["config"]["turns"]
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "point 0" in message
    assert "missing field 'config.turns'" in message


def test_a_point_written_before_the_fleet_parameters_loads_with_their_defaults(tmp_path: Path) -> None:
    data = _valid_dict()
    for key in ("replicas", "router", "router_policy", "session_header", "router_retries",
                "kill_replica_at_turn"):  # fmt: skip
        del data["points"][0]["config"][key]
    _write_results_json(tmp_path, data)
    config = load(tmp_path).points[0].config
    assert (config.replicas, config.router_policy, config.session_header) == (0, "cache_aware", "off")


def test_load_point_with_bad_status(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][0]["status"] = "great"
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "'great'" in message
    assert "point 0" in message


def test_load_point_with_zero_rollouts(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][1]["config"]["rollouts"] = 0
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "point 1" in message
    assert "rollouts" in message and "got 0" in message


def test_load_point_with_wrong_config_type(tmp_path: Path) -> None:
    data = _valid_dict()
    data["points"][0]["config"]["turns"] = "3"
    _write_results_json(tmp_path, data)
    message = str(_load_error(tmp_path))
    assert "turns must be int" in message


# --- the points log ---------------------------------------------------------------------------


def test_points_log_round_trip(tmp_path: Path) -> None:
    assert read_points_log(tmp_path) == []
    first, second = _results().points
    out = tmp_path / "new" / "dir"
    append_point(out, first)
    append_point(out, second)
    assert read_points_log(out) == [first, second]
    lines = (out / POINTS_LOG).read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == first.to_dict()


def test_points_log_torn_last_line_is_ignored(tmp_path: Path) -> None:
    first, second = _results().points
    append_point(tmp_path, first)
    line = json.dumps(second.to_dict())
    with open(tmp_path / POINTS_LOG, "a") as f:
        f.write(line[: len(line) // 2])  # a crash in the middle of the write
    assert read_points_log(tmp_path) == [first]


def test_points_log_torn_middle_line_raises(tmp_path: Path) -> None:
    first, second = _results().points
    append_point(tmp_path, first)
    line = json.dumps(second.to_dict())
    with open(tmp_path / POINTS_LOG, "a") as f:
        f.write(line[: len(line) // 2] + "\n")
    append_point(tmp_path, second)
    with pytest.raises(MmbenchError) as info:
        read_points_log(tmp_path)
    assert "line 2" in str(info.value)
    assert "damaged" in str(info.value)
    assert info.value.exit_code == 2


def test_points_log_invalid_record_raises(tmp_path: Path) -> None:
    data = _record().to_dict()
    data["config"]["rollouts"] = 0
    (tmp_path / POINTS_LOG).write_text(json.dumps(data) + "\n")
    with pytest.raises(MmbenchError, match="line 1"):
        read_points_log(tmp_path)


# --- atomic_write -----------------------------------------------------------------------------


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    atomic_write(target, "one\n")
    atomic_write(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    atomic_write(target, "old\n")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, "new content that must not land\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    assert os.replace is not failing_replace


def test_save_failure_keeps_old_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = _results()
    save(tmp_path, results)
    before = (tmp_path / RESULTS_JSON).read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("boom")

    monkeypatch.setattr(results_mod.os, "replace", failing_replace)
    with pytest.raises(OSError):
        save(tmp_path, ResultsFile(dict(ENVIRONMENT), {}, results.points[:1]))
    monkeypatch.undo()
    assert (tmp_path / RESULTS_JSON).read_bytes() == before
    assert load(tmp_path) == results
    assert sorted(p.name for p in tmp_path.iterdir()) == [RESULTS_CSV, RESULTS_JSON]


# --- the golden file --------------------------------------------------------------------------


def test_golden_results_file(tmp_path: Path) -> None:
    """The current schema's file format, byte for byte.

    To regenerate after an intended format change: MMBENCH_UPDATE_GOLDEN=1 pytest this test,
    then read the diff.
    """
    save(tmp_path, _results())
    produced = (tmp_path / RESULTS_JSON).read_bytes()
    if os.environ.get("MMBENCH_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(produced)
    assert produced == GOLDEN.read_bytes()


@pytest.mark.parametrize(
    "old", [GOLDEN_V1, GOLDEN_V2, GOLDEN_V3, GOLDEN_V4, GOLDEN_V5], ids=["v1", "v2", "v3", "v4", "v5"]
)
def test_an_older_file_is_migrated_to_the_current_schema(tmp_path: Path, old: Path) -> None:
    (tmp_path / RESULTS_JSON).write_text(old.read_text())
    migrated = load(tmp_path)
    assert migrated.schema_version == SCHEMA_VERSION == 6
    assert all(p.config.engine_max_body_mb == 2048 and p.config.dtype == "float32" for p in migrated.points)
    assert load(GOLDEN).points == migrated.points  # the current golden = the same points, migrated


def test_a_v6_file_from_before_the_trainer_stage_loads_with_its_defaults() -> None:
    """Its points ran without the stage: the parameters it lacks take their defaults, and its
    missing section is the empty one; otherwise the same points as the current golden."""
    early = json.loads(GOLDEN_V6_EARLY.read_text())
    assert "trainer" not in early["points"][0] and "trainer" not in early["points"][0]["config"]
    points = load(GOLDEN_V6_EARLY).points
    assert all(p.config.trainer == "off" and p.trainer.wrong is None for p in points)
    assert points == load(GOLDEN).points


def test_golden_has_the_current_schema_and_required_fields() -> None:
    data = json.loads(GOLDEN.read_text())
    assert data["schema_version"] == 6
    assert data["environment"] == ENVIRONMENT
    assert len(data["points"]) == 2
    for point in data["points"]:
        missing = [name for name in GOLDEN_REQUIRED if _dig(point, name) is _MISSING]
        assert missing == []
    assert load(GOLDEN) == _results()


_MISSING = object()


def _dig(data: Any, path: str) -> Any:
    for name in path.split("."):
        if not isinstance(data, dict) or name not in data:
            return _MISSING
        data = data[name]
    return data


def _leaves(data: Any) -> list[str]:
    """Every figure of a JSON value as text (lists and objects opened up), keys left out."""
    if isinstance(data, dict):
        return [x for v in data.values() for x in _leaves(v)]
    if isinstance(data, list):
        return [x for v in data for x in _leaves(v)]
    return [json.dumps(data)]


V5_FILES = sorted(Path(__file__).resolve().parents[2].glob("results/**/results.json"))


def _no_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    return value


@pytest.mark.parametrize("path", [GOLDEN_V5, *V5_FILES], ids=lambda p: str(p.parent.name))
def test_every_v5_figure_survives_the_migration(path: Path) -> None:
    """The same figures, before and after: every v5 field is found at its v6 path with its value,
    and the v6 point holds no figure the v5 one did not (the null figures v6 adds aside)."""
    raw = json.loads(path.read_text())
    if raw["schema_version"] != 5:
        pytest.skip(f"schema {raw['schema_version']}")
    migrated = load(path)
    config_names = set(field_names())
    for old, new in zip(raw["points"], migrated.points, strict=True):
        data = new.to_dict()
        for name, value in old.items():
            if name in config_names:
                assert _dig(data, f"config.{name}") == value, name
            elif name in V5_KIND_PEAKS:
                kinds = _dig(data, "engine.figures.processes") or {}
                assert (kinds.get(V5_KIND_PEAKS[name]) or {}).get("peak_rss_bytes") == value, name
            elif name == "engine":
                kind, url = _dig(data, "engine.kind"), _dig(data, "engine.url")
                assert (url if kind == "external" else kind) == value
            else:  # v6 may add null figures inside (a kind's start_rss_bytes, say)
                assert _no_nulls(_dig(data, V5_PATHS[name])) == value, name
        # no figure invented: v6's non-null leaves are v5's, but for the engine's kind and the
        # parameters added to schema 6 later (their defaults: how v5's points ran)
        for name in LATER_FIELDS:
            data["config"].pop(name)
        before = sorted(x for x in _leaves(old) if x != "null")
        after = [x for x in _leaves(data) if x != "null"]
        if old.get("engine") not in (None, "embedded", "vllm"):
            after.remove('"external"')
        peaks = [old[n] for n in V5_KIND_PEAKS if old.get(n) is not None]
        for peak in peaks:  # v5 held each kind's peak twice: in engine_processes and on its own
            after.append(json.dumps(peak))
        assert sorted(after) == before


def test_append_after_a_torn_line_drops_the_torn_point_and_keeps_the_new_one(tmp_path: Path) -> None:
    first, second = _record(repeat=0), _record(repeat=1)
    append_point(tmp_path, first)
    with open(tmp_path / POINTS_LOG, "a") as f:
        f.write('{"mode": "full", "rollo')  # a crash mid-append
    append_point(tmp_path, second)
    assert read_points_log(tmp_path) == [first, second]
