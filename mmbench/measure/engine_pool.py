"""A sweep's engines, each started once for the points that share its configuration
(`mmbench sweep --reuse-engine`).

A real vLLM takes about 45 s to start here, against a few seconds of rollouts: a sweep that
started one per point spent nearly all its time starting engines. The pool keeps the engine of the
last point and hands it to the next point with the same configuration (the same `vllm serve`
flags); a point with another configuration stops it and starts its own. Between two points the
engine is reset (mmbench.world.engine.vllm.server.VllmEngine.reset: its caches emptied, every
process collected and trimmed), and the harness reads its baseline and resets its peaks again, as
for a fresh engine. An engine found dead, or that a point's failure leaves in doubt, is stopped
and the next point gets a fresh one.

mmbench's own engine starts in a fraction of a second (forked from a fork server), so it is
started per point as before: reusing it would save little and carry one point's RNG state and
allocator arenas into the next.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmbench.config import PointConfig
from mmbench.measure.engines import EngineHandle, ReusableHandle, Vllm

# Told of every engine the pool starts: its description (for a sweep's progress).
OnEngineStart = Callable[[str], None]


@dataclass(slots=True)
class Lease:
    """A point's engine: started for it (reused 0) or kept from earlier points (reused N), and the
    asset directory raw-file's client writes to and the engine reads (None for other modes)."""

    engine: EngineHandle
    assets: Path | None
    reused: int
    setup_s: float  # what getting it ready took: a start, or a reset
    keep: bool = True  # False: the point left the engine in doubt; the pool stops it


class EnginePool:
    def __init__(self, on_start: OnEngineStart | None = None) -> None:
        self._on_start = on_start
        self._key: Hashable | None = None
        self._engine: ReusableHandle | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._served = 0
        self.starts = 0  # engines started, over the pool's life
        self.start_s = 0.0  # and the seconds they took

    @contextmanager
    def lease(self, choice: Vllm, config: PointConfig, file_assets: bool) -> Iterator[Lease]:
        """The engine for this point, ready: the pool's, reset, where it has this configuration;
        else a new one, started. Kept for the next point unless the point leaves it in doubt."""
        key = choice.key(config, file_assets)
        t0 = time.monotonic()
        reused = self._served if key == self._key and self._alive() else None
        if reused is None:
            self.close()
            self._start(choice, config, file_assets, key)
        else:
            assert self._engine is not None
            self._engine.reset()
            self._clear_assets()
        assert self._engine is not None
        lease = Lease(self._engine, self._assets, reused or 0, time.monotonic() - t0)
        try:
            yield lease
        except BaseException:
            self.close()
            raise
        self._served += 1
        if not lease.keep or not self._alive():
            self.close()

    @property
    def _assets(self) -> Path | None:
        return Path(self._dir.name) if self._dir is not None else None

    def _alive(self) -> bool:
        return self._engine is not None and self._engine.alive()

    def _start(self, choice: Vllm, config: PointConfig, file_assets: bool, key: Hashable) -> None:
        if file_assets:  # one directory for the engine's life, emptied between points
            self._dir = tempfile.TemporaryDirectory(prefix="mmbench-assets-")
        engine = choice.open_reusable(config, self._assets)
        if self._on_start is not None:
            self._on_start(choice.describe())
        t0 = time.monotonic()
        try:
            engine.__enter__()
        except BaseException:
            self._drop_dir()
            raise
        self.starts += 1
        self.start_s += time.monotonic() - t0
        self._engine, self._key, self._served = engine, key, 0

    def _clear_assets(self) -> None:
        """The next point's client writes its own images: none of the last point's stay."""
        if self._dir is None:
            return
        for path in Path(self._dir.name).iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _drop_dir(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def close(self) -> None:
        """Stop the pool's engine, if any (also on failure and Ctrl-C: the sweep closes it)."""
        engine, self._engine, self._key = self._engine, None, None
        try:
            if engine is not None:
                engine.__exit__(None, None, None)
        finally:
            self._drop_dir()
