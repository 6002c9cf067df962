"""mmbench.measure.probes: RSS, its high-water mark, USS, malloc_trim and allocator settings (Linux)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from mmbench.measure.probes import (
    AllocatorSettings,
    PeakSampler,
    glibc_version,
    malloc_trim,
    rss_bytes,
    trim_floor_bytes,
    uss_bytes,
)

MIB = 1024**2
BIG = 64 * MIB  # above glibc's largest dynamic mmap threshold (32 MiB): always mmap'd, freed at once

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _touch_big() -> np.ndarray:
    return np.ones(BIG // 8, dtype=np.float64)  # np.ones writes every page: all resident


def test_rss_is_positive_and_agrees_with_psutil() -> None:
    ours = rss_bytes()
    theirs = psutil.Process().memory_info().rss
    assert ours > 0
    assert abs(ours - theirs) <= 0.1 * theirs


RSS_SCRIPT = """
import numpy as np
from mmbench.measure.probes import rss_bytes
BIG = 64 << 20
before = rss_bytes()
arr = np.ones(BIG // 8)  # 64 MiB above the mmap threshold's cap: its own mapping, returned on free
during = rss_bytes()
del arr
after = rss_bytes()
assert during - before >= BIG * 0.9, (before, during)
assert during - after >= BIG * 0.9, (during, after)
"""


def test_rss_follows_an_allocation() -> None:
    proc = _fresh(RSS_SCRIPT)
    assert proc.returncode == 0, proc.stderr


HWM_SCRIPT = """
from mmbench.measure.probes import reset_peak, hwm_bytes, rss_bytes
import numpy as np
MIB = 1 << 20
BIG = 64 * MIB
if not reset_peak():
    raise SystemExit(77)
hwm0 = hwm_bytes()
assert hwm0 <= rss_bytes() + MIB
arr = np.ones(BIG // 8)  # touched: resident
rss_during = rss_bytes()
del arr
rss_after = rss_bytes()
hwm1 = hwm_bytes()
assert hwm1 >= hwm0 + BIG * 0.9, (hwm0, hwm1)  # the peak stays up...
assert hwm1 >= rss_during - MIB
assert rss_after <= rss_during - BIG * 0.9, (rss_during, rss_after)  # ...while RSS went back down
assert reset_peak() is True
hwm2 = hwm_bytes()
assert hwm2 <= rss_bytes() + MIB
assert hwm2 < hwm1 - BIG * 0.5
"""


def _fresh(script: str) -> subprocess.CompletedProcess[str]:
    """Run in a fresh interpreter: what the test suite allocated before must not blur RSS."""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


@linux_only
def test_reset_peak_and_hwm() -> None:
    proc = _fresh(HWM_SCRIPT)
    if proc.returncode == 77:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert proc.returncode == 0, proc.stderr


def test_malloc_trim_returns_a_bool() -> None:
    assert isinstance(malloc_trim(), bool)
    assert isinstance(malloc_trim(), bool)  # and can be called again


_DEEP_TRIM_SCRIPT = textwrap.dedent(
    """
    import gc, json, threading
    import numpy as np
    from mmbench.measure.probes import deep_trim, rss_bytes

    keep = []
    def work():
        arrays = [np.ones(6 * 1024 * 1024 // 8) for _ in range(8)]
        keep.append(np.ones(1000))  # a small live object after the big ones
        del arrays

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    before = rss_bytes()
    result = deep_trim()
    after = rss_bytes()
    print(json.dumps({"before": before, "after": after, "result": result}))
    """
)


@linux_only
def test_deep_trim_does_not_raise_rss() -> None:
    # In a child: deep_trim freezes glibc's thresholds for the rest of the process.
    proc = _fresh(_DEEP_TRIM_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(out["result"], bool)
    assert out["before"] > 0
    assert out["after"] <= out["before"] + 4 * MIB


_TRIM_FLOOR_SCRIPT = textwrap.dedent(
    """
    import json, threading
    import numpy as np
    from mmbench.measure.probes import deep_trim, rss_bytes, trim_floor_bytes

    # Free a 16 MiB mmap'd block: glibc's dynamic thresholds rise (mmap 16 MiB, trim 32 MiB).
    del_me = np.ones(16 * 1024 * 1024 // 8)
    del del_me

    def work():  # 4 MiB written, then freed, in this thread's arena: its top stays resident
        block = np.ones(4 * 1024 * 1024 // 8)
        del block

    t = threading.Thread(target=work)
    t.start()
    t.join()
    deep_trim(freeze_thresholds=False)  # the baseline's trim: leaves that top where it is
    before = rss_bytes()
    floor = trim_floor_bytes()
    after = rss_bytes()
    print(json.dumps({"floor": floor, "before": before, "after": after}))
    """
)


@linux_only
def test_trim_floor_measures_the_arena_tops_a_frozen_trim_releases() -> None:
    proc = _fresh(_TRIM_FLOOR_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the 4 MiB top is what a trim with frozen thresholds releases, measured in the fork...
    assert 3 * MIB <= out["floor"] <= 8 * MIB, out
    # ...and this process keeps it (its thresholds stay dynamic)
    assert out["after"] >= out["before"] - MIB, out


def test_trim_floor_is_none_or_non_negative() -> None:
    floor = trim_floor_bytes()
    assert floor is None or floor >= 0


SAMPLER_SCRIPT = """
import time
import numpy as np
from mmbench.measure.probes import PeakSampler, rss_bytes
BIG = 64 << 20
with PeakSampler(interval_s=0.001) as sampler:
    start = sampler.peak
    arr = np.ones(BIG // 8)
    deadline = time.monotonic() + 10
    while sampler.peak < start + BIG * 0.9 and time.monotonic() < deadline:
        time.sleep(0.001)  # wait for the sampler to see it, bounded
    del arr
after = rss_bytes()
assert sampler.peak >= start + BIG * 0.9, (start, sampler.peak)
assert sampler.peak >= after + BIG * 0.9, (after, sampler.peak)
assert not sampler._thread.is_alive()
"""


def test_peak_sampler_sees_an_allocation_inside_its_block() -> None:
    proc = _fresh(SAMPLER_SCRIPT)
    assert proc.returncode == 0, proc.stderr


def test_peak_sampler_without_allocation_stays_near_rss() -> None:
    with PeakSampler(interval_s=0.001) as sampler:
        time.sleep(0.01)
    assert sampler.peak > 0
    assert sampler.peak <= rss_bytes() + 16 * MIB


def test_allocator_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    settings = AllocatorSettings.current()
    assert settings.malloc_arena_max == "2"
    assert settings.malloc_mmap_threshold == "131072"
    assert settings.malloc_trim_threshold is None
    assert settings.glibc == glibc_version()
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    settings = AllocatorSettings.current()
    assert settings.malloc_arena_max is None
    assert settings.malloc_trim_threshold == "0"


def test_uss_is_none_or_positive() -> None:
    uss = uss_bytes()
    assert uss is None or (isinstance(uss, int) and uss > 0)
    if uss is not None:
        assert uss <= rss_bytes() + 16 * MIB  # unique pages are a part of the resident ones


@linux_only
def test_glibc_version() -> None:
    version = glibc_version()
    assert version is not None
    assert version.startswith("glibc")
    assert version.split()[1][0].isdigit()
