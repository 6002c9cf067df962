"""Process lifetime helpers shared by the worker and the engine: no orphans, ever."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import TracebackType
from typing import Self

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: receive SIGTERM when the parent dies; exit at once if it already has."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        sys.exit(1)  # the parent died before prctl took effect


PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """Linux: the process's name as ps and psutil's name() show it (15 characters at most), so that
    a forked worker or engine can be told from the fork server it shares a command line with."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        return


class Started:
    """A process mmbench starts with start() and stops with stop(): as a context manager it is
    stopped on the way out, however the block ends (also on failure and Ctrl-C)."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
