"""The process's own memory, at the lowest level: RSS from /proc and glibc's malloc_trim.

Shared by the world (the client's trim_after_build knob) and the instrument (mmbench.measure.probes).
"""

from __future__ import annotations

import ctypes

import psutil

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    """glibc, loaded once (OSError where there is none)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6")
    return _libc


def _status_kb(field: str, pid: int | str = "self") -> int | None:
    """A field of /proc/<pid>/status in bytes (VmRSS, VmHWM, ...); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def vmhwm_of(pid: int | None) -> int | None:
    """A process's RSS high-water mark (VmHWM), exact where sampling is not; None where unreadable."""
    return None if pid is None else _status_kb("VmHWM", pid)


def hwm_bytes() -> int | None:
    """The RSS high-water mark (VmHWM) since start or the last reset_peak()."""
    return _status_kb("VmHWM")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (write 5 to clear_refs). False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    """Resident set size now (VmRSS), falling back to psutil off Linux."""
    value = _status_kb("VmRSS")
    return value if value is not None else psutil.Process().memory_info().rss


def malloc_trim() -> bool:
    """glibc malloc_trim(0): give freed heap pages back to the kernel. False off glibc."""
    try:
        return bool(libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False
