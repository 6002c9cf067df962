"""Linux memory probes: RSS and its high-water mark, USS, malloc_trim, and allocator settings."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
import warnings
from dataclasses import dataclass

import psutil

from mmbench.world.procmem import _status_kb, hwm_bytes, libc, malloc_trim, reset_peak, rss_bytes

__all__ = ["hwm_bytes", "malloc_trim", "reset_peak", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def uss_bytes() -> int | None:
    try:
        return int(psutil.Process().memory_full_info().uss)
    except (psutil.Error, AttributeError):
        return None


M_TRIM_THRESHOLD = -1


def _arena_probe_threads() -> int:
    """Threads alive at once in deep_trim, one per arena: glibc caps the arenas at MALLOC_ARENA_MAX,
    or 8 per core (64-bit) where that is not set; at most 64 (each thread costs ~0.7 ms to start)."""
    cap = 8 * (os.cpu_count() or 8)
    with contextlib.suppress(ValueError):  # glibc ignores a malformed value too
        cap = max(cap, int(os.environ.get("MALLOC_ARENA_MAX", "0")))
    return min(64, cap)


_ARENA_PROBE_THREADS = _arena_probe_threads()
_ARENA_PROBE_BYTES = 1 << 18  # >= FASTBIN_CONSOLIDATION_THRESHOLD, so free() runs heap_trim


def deep_trim(freeze_thresholds: bool = True) -> bool:
    """malloc_trim(0), and also release the top chunk of every per-thread arena.

    malloc_trim(0) returns free pages inside every arena's bins and the main arena's top, but
    glibc leaves a per-thread arena's top chunk resident below the trim threshold, which the
    dynamic mmap threshold raises to 2 x the largest freed block (12 MiB for 512x512 pixels).
    With one such top per arena the trimmed reading could sit ~100 MB above the live data. Here
    the trim threshold is set to 0 and a thread per arena frees one block, so that glibc trims
    each arena's top. This freezes the dynamic thresholds for the rest of the process, so it is
    only called after the raw readings. With freeze_thresholds False (for the baseline, before any
    large block was freed, while the trim threshold is still glibc's 128 KiB default) the arenas are
    trimmed at the current threshold and nothing is changed.
    """
    try:
        lib = libc()
        lib.malloc.restype = ctypes.c_void_p
        lib.free.argtypes = [ctypes.c_void_p]
        if freeze_thresholds:
            lib.mallopt(M_TRIM_THRESHOLD, 0)
    except (OSError, AttributeError):
        return malloc_trim()
    barrier = threading.Barrier(_ARENA_PROBE_THREADS)

    def touch_arena() -> None:
        barrier.wait()  # all alive at once: each thread takes a different free arena
        lib.free(lib.malloc(_ARENA_PROBE_BYTES))
        barrier.wait()

    threads = [threading.Thread(target=touch_arena) for _ in range(_ARENA_PROBE_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return malloc_trim()


def trim_floor_bytes() -> int | None:
    """What RSS a trim with frozen thresholds (deep_trim(True)) would release now, measured in a
    forked copy of this process so that this one keeps glibc's dynamic thresholds.

    The baseline can only be trimmed at glibc's current threshold (freezing it would change how the
    rollouts allocate), which leaves each per-thread arena's top chunk resident below it: ~2-3 MiB
    here that the retained (live) reading, taken with the thresholds frozen, no longer holds. The
    child reads its anonymous resident pages (the parent's, shared copy-on-write), trims with the
    thresholds frozen, reads again, and reports the difference through a pipe. None where fork or
    /proc is not available."""
    if not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads: the child only trims
        pid = os.fork()
    if pid == 0:  # the child: no return from here
        released = -1
        try:
            # Anonymous pages only: the child's RSS also gains the file-backed pages (code) it faults
            # in as it runs, which the parent already has; the arena tops are anonymous.
            before = _status_kb("RssAnon")
            deep_trim(freeze_thresholds=True)
            after = _status_kb("RssAnon")
            if before is not None and after is not None:
                released = max(0, before - after)
        finally:
            os.write(write_fd, str(released).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as r:
        text = r.read()
    os.waitpid(pid, 0)
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def glibc_version() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        lib, version = platform.libc_ver()
        return f"{lib} {version}" if lib else None


@dataclass(frozen=True, slots=True)
class AllocatorSettings:
    malloc_mmap_threshold: str | None
    malloc_arena_max: str | None
    malloc_trim_threshold: str | None
    glibc: str | None

    @classmethod
    def current(cls) -> AllocatorSettings:
        env = os.environ
        return cls(
            env.get("MALLOC_MMAP_THRESHOLD_"),
            env.get("MALLOC_ARENA_MAX"),
            env.get("MALLOC_TRIM_THRESHOLD_"),
            glibc_version(),
        )


class PeakSampler:
    """The fallback where VmHWM cannot be reset: sample RSS every `interval_s` on a thread.

    It misses spikes shorter than the interval, which is why results record the method used.
    """

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmbench-peak", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
