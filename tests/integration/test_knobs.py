"""The knobs real clients turn (docs domain.md sections 5 and 8): each option reaches the worker
and changes what it should. Small sizes: qwen3-vl pads 64x64 up to 256x256, (256, 1536) pixels."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import mmbench.rollout.driver as rollout_module
from mmbench.config import PointConfig
from mmbench.measure.accounting import Accounting, account
from mmbench.measure.harness import measure_point, worker_env
from mmbench.measure.model import predict
from mmbench.rollout import RolloutDriver, Totals
from mmbench.transports import make_transport
from mmbench.world.geometry import get_geometry
from tests.conftest import EngineStarter
from tests.helpers import PROCESSED_MODES

slow = pytest.mark.slow

LAYOUT = get_geometry("qwen3-vl").layout(64, 64)
SOURCE = 10_000.0  # any source size: the tests below compare pixels and bodies, not sources


def point(mode: str = "full", rollouts: int = 4, turns: int = 3, **kw: Any) -> PointConfig:
    return PointConfig(mode=mode, rollouts=rollouts, turns=turns, image_size="64", **kw)


def run(config: PointConfig, url: str | None) -> tuple[RolloutDriver, Totals, Accounting]:
    assert url is not None
    world = RolloutDriver(config, make_transport(config.mode, config.sent_hashes_max))
    trajectories = world.run(url)
    totals = Totals.of(trajectories)
    assert totals.failed_rollouts == 0, totals.failures
    return world, totals, account(trajectories, world.cached_items())


# --- max_inflight_builds ----------------------------------------------------------------------


class BuildProbe:
    """Wraps RolloutDriver._build: counts the builds running at once (each held open a little, so that
    uncapped builds visibly overlap)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold_s: float = 0.05) -> None:
        self.running = 0
        self.max_running = 0
        self.builds = 0
        self._lock = threading.Lock()
        real = RolloutDriver._build

        def probed(world: RolloutDriver, *args: Any) -> bytes:
            with self._lock:
                self.running += 1
                self.builds += 1
                self.max_running = max(self.max_running, self.running)
            try:
                time.sleep(hold_s)
                return real(world, *args)
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(RolloutDriver, "_build", probed)


@slow
@pytest.mark.parametrize("cap", [1, 2])
def test_max_inflight_builds_caps_concurrent_builds(
    engine_factory: EngineStarter, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    probe = BuildProbe(monkeypatch)
    engine = engine_factory()
    _, totals, _ = run(point(rollouts=4, max_inflight_builds=cap), engine.url)
    assert probe.builds == totals.requests == 4 * 3
    assert probe.max_running == cap
    assert totals.wrong_results == 0


@slow
def test_without_a_cap_builds_overlap(engine_factory: EngineStarter, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = BuildProbe(monkeypatch)
    engine = engine_factory()
    _, totals, _ = run(point(rollouts=4, max_inflight_builds=0), engine.url)
    assert probe.builds == totals.requests
    assert probe.max_running > 2  # the control: the cap above is what serializes


# --- trim_after_build -------------------------------------------------------------------------


@slow
@pytest.mark.parametrize(("policy", "trims"), [("off", 0), ("always", 6), ("auto", 0)])
def test_trim_after_build_runs_per_policy(engine_factory: EngineStarter, policy: str, trims: int) -> None:
    # auto trims only when a build grew RSS by 64 MB: never at these sizes (a body is ~2 MiB)
    engine = engine_factory()
    world, totals, _ = run(point(rollouts=2, trim_after_build=policy), engine.url)
    assert totals.requests == 6
    assert world.trims == trims


@slow
def test_trim_after_build_auto_follows_its_threshold(
    engine_factory: EngineStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout_module, "TRIM_AUTO_GROWTH", -(2**62))  # any build "grew" enough
    engine = engine_factory()
    world, totals, _ = run(point(rollouts=2, trim_after_build="auto"), engine.url)
    assert world.trims == totals.requests == 6


# --- the allocator knobs ------------------------------------------------------------------------

# Run in a process started with the worker's environment: does glibc honour the settings?
_ALLOCATOR_PROBE = r"""
import ctypes, json, os, tempfile, threading
lib = ctypes.CDLL("libc.so.6")
lib.malloc.restype = ctypes.c_void_p
lib.malloc.argtypes = [ctypes.c_size_t]
lib.free.argtypes = [ctypes.c_void_p]
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]
lib.mallinfo2.restype = Mallinfo2
# A freed mmap'd block raises glibc's dynamic threshold, so the next block of that size comes from
# the heap; a fixed threshold keeps mmap'ing it.
lib.free(lib.malloc(4 << 20))
before = lib.mallinfo2().hblks
p = lib.malloc(4 << 20)
second_mmapped = lib.mallinfo2().hblks - before == 1
lib.free(p)
# 16 threads allocate at once: each may take its own arena, up to MALLOC_ARENA_MAX.
barrier = threading.Barrier(16)
def work():
    barrier.wait()
    q = lib.malloc(1024)
    barrier.wait()
    lib.free(q)
threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
lib.fopen.restype = ctypes.c_void_p
lib.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
lib.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
lib.fclose.argtypes = [ctypes.c_void_p]
path = tempfile.mktemp()
fp = lib.fopen(path.encode(), b"w")
lib.malloc_info(0, fp)
lib.fclose(fp)
arenas = open(path).read().count("<heap nr=")
os.unlink(path)
print(json.dumps({"second_mmapped": second_mmapped, "arenas": arenas}))
"""


def allocator_probe(config: PointConfig) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _ALLOCATOR_PROBE], env=worker_env(config), capture_output=True, check=True
    )
    return dict(json.loads(out.stdout))


def test_worker_env_sets_the_malloc_knobs_only_when_asked() -> None:
    env = worker_env(point(malloc_arena_max=2, malloc_mmap_threshold=131072))
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["MALLOC_MMAP_THRESHOLD_"] == "131072"
    default = worker_env(point())
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"):
        assert default.get(name) == os.environ.get(name)


@pytest.mark.skipif(not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"), reason="needs glibc >= 2.33")
def test_glibc_honours_the_malloc_knobs_in_the_worker_environment() -> None:
    default = allocator_probe(point())
    assert default["second_mmapped"] is False  # the dynamic threshold moved the block to the heap
    assert default["arenas"] > 2
    fixed = allocator_probe(point(malloc_mmap_threshold=131072))
    assert fixed["second_mmapped"] is True
    capped = allocator_probe(point(malloc_arena_max=2))
    assert capped["arenas"] <= 2


@slow
def test_every_knob_reaches_the_worker_and_is_recorded() -> None:
    config = PointConfig(
        mode="full", rollouts=2, turns=3, image_size="256", max_inflight_builds=1,
        trim_after_build="always", malloc_arena_max=2, malloc_mmap_threshold=131072, dtype="bfloat16",
    )  # fmt: skip
    record = measure_point(config)
    assert record.status == "ok", record.cause
    d = record.to_dict()["config"]
    knobs = ("max_inflight_builds", "trim_after_build", "malloc_arena_max", "malloc_mmap_threshold", "dtype")
    for key in knobs:
        assert d[key] == getattr(config, key), key
    assert record.client.allocator.malloc_arena_max == "2"
    assert record.client.allocator.malloc_mmap_threshold == "131072"
    assert record.client.rendering.trims_after_build == record.traffic.requests == 6
    # bfloat16: 2 bytes a pixel; 2 x 3 images of (256, 1536)
    assert record.client.accounting.stored_pixel_bytes == 2 * 3 * 256 * 1536 * 2
    assert record.traffic.wrong_results == 0
    assert record.traffic.bytes_shipped == record.engine.figures.bytes_received
    assert record.prediction.shipped_ratio == pytest.approx(1.0, abs=0.01)
    # the same point with every knob at its default
    plain = measure_point(PointConfig(mode="full", rollouts=2, turns=3, image_size="256"))
    assert plain.status == "ok", plain.cause
    assert (
        plain.client.allocator.malloc_arena_max is None
        and plain.client.allocator.malloc_mmap_threshold is None
    )
    assert plain.client.rendering.trims_after_build == 0
    assert plain.client.accounting.stored_pixel_bytes == 2 * record.client.accounting.stored_pixel_bytes


# --- dtype --------------------------------------------------------------------------------------


@slow
@pytest.mark.parametrize("mode", PROCESSED_MODES)
def test_bfloat16_halves_pixels_and_bodies_in_every_mode(engine_factory: EngineStarter, mode: str) -> None:
    engine = engine_factory()
    f32 = run(point(mode, rollouts=2, turns=4), engine.url)
    bf16 = run(point(mode, rollouts=2, turns=4, dtype="bfloat16"), engine_factory().url)
    (_, t32, a32), (_, t16, a16) = f32, bf16
    assert t32.wrong_results == t16.wrong_results == 0
    assert t16.requests == t32.requests and t16.full_items_sent == t32.full_items_sent
    assert a16.stored_pixel_bytes * 2 == a32.stored_pixel_bytes
    assert a16.renderer_cache_bytes * 2 == a32.renderer_cache_bytes
    assert a16.source_bytes == a32.source_bytes
    assert 0.49 < t16.bytes_shipped / t32.bytes_shipped < 0.52
    # the model, against the ledger and the bodies
    configs = (point(mode, 2, 4), point(mode, 2, 4, dtype="bfloat16"))
    for (_, totals, ledger), config in zip((f32, bf16), configs, strict=True):
        pred = predict(config, SOURCE)
        assert ledger.stored_pixel_bytes == pred.pixel_bytes
        assert ledger.renderer_cache_only_bytes == pred.renderer_cache_only_bytes
        assert totals.bytes_shipped == pytest.approx(pred.bytes_shipped, rel=0.01)


@slow
def test_model_matches_a_bfloat16_point() -> None:
    record = measure_point(PointConfig(mode="full", rollouts=4, turns=4, image_size="512", dtype="bfloat16"))
    assert record.status == "ok", record.cause
    assert record.traffic.wrong_results == 0
    assert record.client.accounting.stored_pixel_bytes == 4 * 4 * 1024 * 1536 * 2
    assert record.prediction.retained_ratio == pytest.approx(1.0, abs=0.05)
    assert record.prediction.shipped_ratio == pytest.approx(1.0, abs=0.01)
