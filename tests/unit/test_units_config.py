"""mmbench.units (fmt_bytes, parse_size) and mmbench.config.PointConfig validation."""

from __future__ import annotations

from typing import Any

import pytest

from mmbench.config import MAX_ROLLOUTS, PointConfig, coerce, field_names
from mmbench.errors import MmbenchError
from mmbench.units import GIB, KIB, MIB, fmt_bytes, gib, parse_size

# --- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (25_165_824, "24.0 MiB"),
        (6_291_456, "6.0 MiB"),
        (24_000_000, "22.9 MiB"),
        (3 * GIB, "3.0 GiB"),
        (int(1.25 * GIB), "1.2 GiB"),  # banker's rounding of the format: 1.25 -> 1.2
        (5 * 1024**4, "5.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),
        (-1536, "-1.5 KiB"),
        (-512, "-512 B"),
        (-3 * GIB, "-3.0 GiB"),
        (100.7, "100 B"),
    ],
)
def test_fmt_bytes(n: float, text: str) -> None:
    assert fmt_bytes(n) == text


def test_fmt_bytes_none_and_precision() -> None:
    assert fmt_bytes(None) == "-"
    assert fmt_bytes(1536, precision=2) == "1.50 KiB"
    assert fmt_bytes(25_165_824, precision=0) == "24 MiB"


def test_unit_constants() -> None:
    assert (KIB, MIB, GIB) == (1024, 1024**2, 1024**3)
    assert gib(3 * GIB) == 3.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * MIB),
        ("8GiB", 8 * GIB),
        ("1.5g", int(1.5 * GIB)),
        ("1048576", 1_048_576),
        ("512M", 512 * MIB),
        ("24gib", 24 * GIB),
        ("4k", 4 * KIB),
        ("100b", 100),
        ("2T", 2 * 1024**4),
        (" 64 MiB ", 64 * MIB),
        (".5GiB", GIB // 2),
        (1048576, 1_048_576),
    ],
)
def test_parse_size(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5MiB", "1e9", "5 MB B", "1.2.3G", "MiB", "8 GiBs"])
def test_parse_size_rejects_bad_text(text: str) -> None:
    with pytest.raises(MmbenchError) as info:
        parse_size(text, what="--memory-limit")
    message = str(info.value)
    assert repr(text) in message
    assert message.startswith("--memory-limit:")
    assert info.value.exit_code == 2


@pytest.mark.parametrize("text", ["5i", "5ib"])
def test_parse_size_rejects_a_bare_i_unit(text: str) -> None:
    with pytest.raises(MmbenchError, match=repr(text)):
        parse_size(text)


def test_parse_size_round_trips_fmt_bytes_units() -> None:
    for n in (KIB, 3 * MIB, 7 * GIB):
        number, unit = fmt_bytes(n, precision=0).split()
        assert parse_size(number + unit) == n


# --- PointConfig ------------------------------------------------------------------------------


def _error(**kwargs: Any) -> str:
    with pytest.raises(MmbenchError) as info:
        PointConfig.from_dict(kwargs)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_valid_and_round_trip() -> None:
    config = PointConfig()
    assert PointConfig.from_dict(config.to_dict()) == config
    assert list(config.to_dict()) == field_names()
    assert config.image_wh == (512, 512)
    assert config.engine_cache_bytes == 4 * GIB


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(MmbenchError) as info:
        PointConfig.from_dict({"turns": 2, "rolouts": 4}, where="scenario point 3")
    message = str(info.value)
    assert message.startswith("scenario point 3:")
    assert "'rolouts'" in message
    for name in field_names():
        assert name in message


@pytest.mark.parametrize(
    ("key", "value", "type_name"),
    [
        ("rollouts", "8", "int"),
        ("rollouts", True, "int"),
        ("rollouts", 8.0, "int"),
        ("turns", None, "int"),
        ("engine_cache_gb", "x", "float"),
        ("engine_cache_gb", False, "float"),
        ("mode", 1, "str"),
        ("image_size", 512.0, "str"),
        ("image_size", True, "str"),
    ],
)
def test_wrong_types_are_rejected(key: str, value: Any, type_name: str) -> None:
    message = _error(**{key: value})
    assert f"{key} must be {type_name}" in message
    assert repr(value) in message


def test_int_accepted_for_float_and_image_size() -> None:
    config = PointConfig.from_dict({"engine_cache_gb": 2, "image_size": 1024})
    assert config.engine_cache_gb == 2.0
    assert isinstance(config.engine_cache_gb, float)
    assert config.image_size == "1024"
    assert config.image_wh == (1024, 1024)
    assert coerce("engine_cache_gb", 0) == 0.0
    assert PointConfig.from_dict({"image_size": "1200x300"}).image_wh == (1200, 300)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rollouts", 0),
        ("rollouts", MAX_ROLLOUTS + 1),
        ("rollouts", -3),
        ("turns", 0),
        ("turns", 10_001),
        ("images_per_turn", 0),
        ("images_per_turn", 65),
        ("pool_size", 0),
        ("pool_size", 257),
        ("image_cache_max", -1),
        ("sent_hashes_max", 0),
        ("text_tokens_per_turn", -1),
        ("completion_tokens", 0),
        ("seed", -1),
        ("engine_cache_gb", -1),
        ("engine_cache_gb", -0.5),
    ],
)
def test_bounds_name_the_field_and_value(key: str, value: Any) -> None:
    message = _error(**{key: value})
    assert key in message
    assert f"got {float(value) if key == 'engine_cache_gb' else value}" in message


def test_bounds_accept_the_edges() -> None:
    config = PointConfig.from_dict(
        {
            "rollouts": MAX_ROLLOUTS,
            "turns": 1,
            "images_per_turn": 64,
            "pool_size": 256,
            "image_cache_max": 0,
            "engine_cache_gb": 0,
            "text_tokens_per_turn": 0,
            "completion_tokens": 1,
            "sent_hashes_max": 1,
        }
    )
    assert config.rollouts == MAX_ROLLOUTS
    assert config.engine_cache_bytes == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e6])
def test_engine_cache_gb_rejects_nan_and_huge(value: float) -> None:
    message = _error(engine_cache_gb=value)
    assert "engine_cache_gb" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mode", "partial"),
        ("model", "llava"),
        ("content", "cartoon"),
        ("image_format", "webp"),
        ("codec", "simdjson"),
    ],
)
def test_unknown_choices_name_the_field_and_value(key: str, value: str) -> None:
    message = _error(**{key: value})
    assert key in message
    assert repr(value) in message
    assert "choose one of" in message


@pytest.mark.parametrize("size", ["0", "abc", "512x", "10x3000", "1x2x3"])
def test_bad_image_size_is_rejected(size: str) -> None:
    message = _error(image_size=size)
    assert "image" in message


def test_direct_construction_validates_too() -> None:
    with pytest.raises(MmbenchError, match="turns"):
        PointConfig(turns=0)
    with pytest.raises(MmbenchError, match="'nope'"):
        PointConfig(mode="nope")
