"""A sweep's engines, each started once for the points that share its configuration and mode.

A real vLLM takes about 45 s to start here, against a few seconds of rollouts: a sweep that
started one per point spent nearly all its time starting engines. The pool keeps the engine of the
last point and hands it to the next point that needs the same one (the same `vllm serve` flags and
the same mode); another point stops it and starts its own. `--fresh-engine` makes a pool that
starts an engine for every point and stops it after (`fresh=True`): the same steps, one point per
engine.

Why one engine per mode: vLLM keeps state that the load it served built (buffers that grow with it,
memory its reset frees but its trim cannot give back), and the state differs by mode. On one engine
for all six modes, measured here, raw at K = 1 after the processed modes showed its engine core
+105 MiB above the engine's baseline against +26 on a fresh engine. Within a mode, served in
ascending load (mmbench.sweep.loop), a point's engine carries only what a smaller load of its own
kind built. `mmbench compat`, which asks what works rather than what it takes, shares one engine
between modes (`share_modes`).

Every point's engine is in the same state when its baseline is read, whichever engine it is:
- **warm for its mode:** it has served a request of this kind before. A new engine's first
  multimodal requests build lazy state once (the processor, the vision tower's kernels and
  buffers, allocator pools: measured at +180 MiB in vLLM's engine core on its first point, +0 on the
  next identical one). That is the engine's start-up cost, not any point's; so an engine that has
  not yet served the point's mode first serves a warm-up (a small point of the same mode and
  geometry, run by the harness: `WarmUp`), fresh engines included;
- **reset:** its caches emptied, idle, every process collected and trimmed
  (mmbench.world.engine.vllm.server.VllmEngine.reset), after a warm-up and between two points;
- then the harness reads its RSS at the point's start and resets its peaks.

Its memory figures are measured above one baseline per engine: its RSS once started, warmed for
its first mode and reset, before its first point (`Lease.baseline`; per process kind too). A
fresh engine's baseline is the same reading. Above each point's own start instead, a reused engine
showed far less than a fresh one (hash-only K=1: the engine core +36 MiB against +102, the worker
+21 against +100): the state its first points built (vLLM's buffers grow with the load it has
served and stay, and the reset's trim cannot give back memory still in use) is in a reused
engine's start, and a fresh engine builds it during the point. Above the engine's warm baseline,
both count it. So that a point does not count state only a larger earlier load built, a sweep
serves each engine's points in ascending load (mmbench.sweep.loop), and a point below the largest
load its engine served gets a fresh engine (`plan --measure`'s search steps back down: there, on
the engine of K = 14, full at K = 12 peaked at 8.4 GiB and failed its 8 GiB, where K = 13 fitted on
fresh engines).

An engine found dead, whose reset fails, or that a point's failure leaves in doubt, is stopped and
the next point gets a fresh one. The pool stops its engine when the sweep ends, also on failure
and Ctrl-C.

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
from mmbench.errors import MmbenchError
from mmbench.measure.engines import EngineHandle, ReusableHandle, Vllm
from mmbench.measure.fleet import ReplicaSet
from mmbench.world.engine.stats import EngineStats

# Told of every engine the pool starts: its description (for a sweep's progress).
OnEngineStart = Callable[[str], None]
# Serves a small point of the config's mode on the engine (its asset directory, for raw-file): None
# once served, else why it failed (the point then runs on an engine not warmed, and says so).
WarmUp = Callable[[EngineHandle, PointConfig, "Path | None"], "str | None"]


def warm_key(config: PointConfig) -> Hashable:
    """What an engine must have served for a point's baseline to be warm: its mode's requests, with
    its images' format and dtype (the engine's configuration fixes the rest: model, geometry)."""
    return (config.mode, config.image_format, config.dtype)


def load(config: PointConfig) -> int:
    """How much a point asks of its engine, for the order of an engine's points: the images its
    rollouts send (an engine keeps state the largest load it served built)."""
    return config.rollouts * config.turns * config.images_per_turn


@dataclass(slots=True)
class Lease:
    """A point's engine: started for it (reused 0) or kept from earlier points (reused N), and the
    asset directory raw-file's client writes to and the engine reads (None for other modes)."""

    engine: EngineHandle
    assets: Path | None
    reused: int
    setup_s: float  # what getting it ready took: a start, a warm-up, a reset
    warmed: bool = False  # it had served this point's mode before the baseline (see the module)
    baseline: EngineStats | None = None  # the engine once warm and reset, before its first point
    keep: bool = True  # False: the point left the engine in doubt; the pool stops it


class EnginePool:
    def __init__(
        self, on_start: OnEngineStart | None = None, fresh: bool = False, share_modes: bool = False
    ) -> None:
        self._on_start = on_start
        self.fresh = fresh  # an engine per point, stopped after it (--fresh-engine)
        self.share_modes = share_modes  # one engine for every mode of a configuration (see the module)
        self._key: Hashable | None = None
        self._engine: ReusableHandle | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._served = 0
        self._warm: set[Hashable] = set()
        self._baseline: EngineStats | None = None
        self._load = 0  # the largest load its engine served
        self.starts = 0  # engines started, over the pool's life
        self.start_s = 0.0  # and the seconds they took

    @contextmanager
    def lease(
        self, choice: Vllm, config: PointConfig, file_assets: bool, warm_up: WarmUp | None = None
    ) -> Iterator[Lease]:
        """The engine for this point, ready: the pool's, reset, where it has this configuration;
        else a new one, started. Warmed for the point's mode first where `warm_up` is given and it
        has not served that mode. Kept for the next point unless the point leaves it in doubt."""
        key = self.key(choice, config, file_assets)
        t0 = time.monotonic()
        if load(config) < self._load or not self._reset(key):
            self.close()
            self._start(choice, config, file_assets, key)
        assert self._engine is not None
        wanted = warm_key(config)
        if warm_up is not None and wanted not in self._warm:
            try:
                self._warm_up(warm_up, choice, config, file_assets, key)
            except BaseException:
                self.close()
                raise
        warmed = wanted in self._warm
        if self._baseline is None:  # once per engine: started, warmed for its first mode, reset
            self._baseline = self._engine.stats()
        lease = Lease(self._engine, self._assets, self._served, time.monotonic() - t0, warmed, self._baseline)
        try:
            yield lease
        except BaseException:
            self.close()
            raise
        self._served += 1
        self._load = max(self._load, load(config))
        self._warm.add(wanted)  # a point of this mode warms its engine as a warm-up would
        if self.fresh or not lease.keep or not self._alive():
            self.close()

    def held_bytes(self) -> int:
        """What the kept engine holds now (its process tree's RSS; 0 without one): the next point
        has it, by this engine or by the one that replaces it."""
        if not self._alive():
            return 0
        assert self._engine is not None
        stats = self._engine.stats()
        return stats.rss_bytes if stats is not None else 0

    def key(self, choice: Vllm, config: PointConfig, file_assets: bool) -> Hashable:
        """Which engine a point needs: its configuration's (`vllm serve` flags, and how many replicas
        a fleet has: its router is the point's own), and its mode's unless the pool shares an
        engine between modes."""
        key = (choice.key(config, file_assets), config.replicas)
        return key if self.share_modes else (key, config.mode)

    def _reset(self, key: Hashable) -> bool:
        """Reset the pool's engine for the next point, where it has this configuration and is
        sound; False where a new engine must start."""
        if key != self._key or not self._alive():
            return False
        assert self._engine is not None
        try:
            self._engine.reset()
        except MmbenchError:  # it no longer answers as it should: the next point gets a fresh one
            return False
        self._clear_assets()
        return True

    def _warm_up(
        self, warm_up: WarmUp, choice: Vllm, config: PointConfig, file_assets: bool, key: Hashable
    ) -> None:
        """Serve a warm-up of the point's mode, then reset the engine as between two points. A
        warm-up that fails leaves the engine not warm for the mode, and one that kills it (or its
        reset) gets the point a new engine, which the point itself then tries."""
        assert self._engine is not None
        cause = warm_up(self._engine, config, self._assets)
        if not self._reset(key):
            self.close()
            self._start(choice, config, file_assets, key)
        elif cause is None:
            self._warm.add(warm_key(config))

    @property
    def _assets(self) -> Path | None:
        return Path(self._dir.name) if self._dir is not None else None

    def _alive(self) -> bool:
        return self._engine is not None and self._engine.alive()

    def _start(self, choice: Vllm, config: PointConfig, file_assets: bool, key: Hashable) -> None:
        if file_assets:  # one directory for the engine's life, emptied between points
            self._dir = tempfile.TemporaryDirectory(prefix="mmbench-assets-")
        engine: ReusableHandle
        if config.replicas:  # a fleet's replicas, kept together; each point starts its own router
            engine = ReplicaSet([choice.open_reusable(config, self._assets) for _ in range(config.replicas)])
        else:
            engine = choice.open_reusable(config, self._assets)
        if self._on_start is not None:
            what = choice.describe()
            self._on_start(f"{config.replicas} x {what}" if config.replicas else what)
        t0 = time.monotonic()
        try:
            engine.__enter__()
        except BaseException:
            self._drop_dir()
            raise
        self.starts += 1
        self.start_s += time.monotonic() - t0
        self._engine, self._key, self._served, self._warm, self._baseline = engine, key, 0, set(), None
        self._load = 0

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


@contextmanager
def engine_pool(
    on_start: OnEngineStart | None = None, fresh: bool = False, share_modes: bool = False
) -> Iterator[EnginePool]:
    """A pool for a sweep or a search, whose engine is stopped however it ends (Ctrl-C included)."""
    pool = EnginePool(on_start, fresh, share_modes)
    try:
        yield pool
    finally:
        pool.close()
