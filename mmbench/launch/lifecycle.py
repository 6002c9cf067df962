"""Process lifetime helpers shared by the worker and the engine: no orphans, ever."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Self

from mmbench.errors import MmbenchError

LOOPBACK = "127.0.0.1"

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


def free_port(host: str = LOOPBACK) -> int:
    """A port free on `host` now (the kernel's pick), for a server mmbench starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def spawn_ready(
    command: list[str], stdout: IO[bytes], env: dict[str, str] | None,
    wait: Callable[[subprocess.Popen[bytes]], None], stop: Callable[[], None],
) -> None:  # fmt: skip
    """Start `command` in a session of its own (stopped as one), its output to `stdout`, then `wait`
    on it until it is ready (`wait` keeps the process for `stop`); `stop` it (the whole session)
    where it never is ready, or on Ctrl-C."""
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait(proc)
    except BaseException:
        stop()
        raise


def wait_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout_s: float,
    last_words: Callable[[], str], first_delay_s: float = 0.05, max_delay_s: float = 1.0, probe: str = "",
) -> None:  # fmt: skip
    """Ask `ready` until it says yes, with a back-off between the probes; a one-line MmbenchError
    (with `last_words`: the end of its log) where the process exits first or `timeout_s` passes.
    `ready` answers False for a probe that failed (connection refused while it starts); `probe`
    names it in the error."""
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        if proc.poll() is not None:
            code = proc.returncode
            raise MmbenchError(f"{what} exited with code {code} before it was ready: {last_words()}")
        if ready():
            return
        if time.monotonic() > deadline:
            asked = f" ({probe})" if probe else ""
            raise MmbenchError(f"{what} was not ready within {timeout_s:.0f} s{asked}: {last_words()}")
        time.sleep(delay)  # back-off between readiness probes, not a stand-in for one
        delay = min(delay * 2, max_delay_s)


def stop_session(
    proc: subprocess.Popen[bytes], grace_s: float, stragglers: Callable[[], None] | None = None
) -> None:
    """Stop a process started in a session of its own, with its whole tree: SIGTERM to the session,
    `grace_s` to exit, then SIGKILL to the session (and `stragglers`: those that left it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if stragglers is not None:
        stragglers()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
