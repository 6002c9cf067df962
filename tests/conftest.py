"""Shared fixtures: engines started in a real process, always stopped in teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.process import EngineProcess

EngineStarter = Callable[..., EngineProcess]


@pytest.fixture
def engine_factory() -> Iterator[EngineStarter]:
    """`start(cache_bytes=..., **EngineConfig kwargs)` starts a ready engine process.

    Every engine started through it is stopped at teardown, also when the test fails.
    """
    started: list[EngineProcess] = []

    def start(cache_bytes: int | None = None, **kwargs: Any) -> EngineProcess:
        if cache_bytes is not None:
            kwargs["cache_bytes"] = cache_bytes
        engine = EngineProcess(EngineConfig(**kwargs))
        started.append(engine)
        engine.start()
        return engine

    yield start
    errors: list[BaseException] = []
    for engine in reversed(started):
        try:
            engine.stop()
        except BaseException as exc:  # stop the others regardless
            errors.append(exc)
    if errors:
        raise errors[0]
