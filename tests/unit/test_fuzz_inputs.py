"""Property-based bad input: the scenario parser and the engine's request validation never crash;
they accept or give one clear error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from mmbench.config import field_names
from mmbench.errors import MmbenchError
from mmbench.sweep.scenarios import META_KEYS, parse_scenario
from mmbench.world.engine.app import EngineConfig, create_app
from mmbench.world.wire import WireError, parse_request, request_object

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["full", "hash-only", "512", "1024x768", "qwen2-vl", "png", "noise"]),
)  # fmt: skip
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=3)
)
keys = st.one_of(st.sampled_from([*META_KEYS, *field_names()]), st.text(max_size=12))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=8))
def test_scenario_parser_accepts_or_gives_one_line(data: dict[str, Any]) -> None:
    try:
        scenario = parse_scenario(data, "fuzz", "fuzz.toml")
    except MmbenchError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ")
        assert "\n" not in message and exc.exit_code == 2
    else:
        assert scenario.points()  # what it accepts is a valid grid


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=8))
def test_valid_scenario_with_one_fuzzed_key(extra: dict[str, Any]) -> None:
    data = {"version": 1, "description": "fuzz", "rollouts": [1, 2], **extra}
    try:
        parse_scenario(data, "fuzz", "fuzz.toml")
    except MmbenchError as exc:
        assert "\n" not in str(exc)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**65), 2**65),
        st.floats(allow_nan=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(base: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


BASE = request_object("m", [1, 2, 3, 4, 5], ["h"], [(0, 4)], [None], 4)
PATHS = [
    ["model"], ["token_ids"], ["sampling_params"], ["features"], ["features", "mm_hashes"],
    ["features", "mm_placeholders"], ["features", "kwargs_data"],
]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_request_validation_accepts_or_raises_wire_error(path: list[str], value: Any) -> None:
    body = json.dumps(_mutate(BASE, path, value)).encode()
    try:
        req = parse_request(body)
    except WireError as exc:
        assert str(exc)
    else:
        assert len(req.hashes) == len(req.placeholders) == len(req.kwargs)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_engine_answers_garbage_with_4xx_and_stays_up(garbage: bytes) -> None:
    with TestClient(create_app(EngineConfig(cache_bytes=1 << 20))) as client:
        r = client.post("/inference/v1/generate", content=garbage)
        assert 400 <= r.status_code < 500 or r.status_code == 200
        assert client.get("/health").status_code == 200
