"""How the instrument starts its processes: every point's worker and engine are new processes,
either forked from a fork server that imported their modules once (`fork`, the default), or
started as fresh interpreters (`exec`).

A fresh interpreter spends most of a small point's time importing torch, numpy and the HTTP
stack; a fork of a process that already has them costs milliseconds, and the child is as much a
new process as an exec'd one: its own pid, address space and allocator, with the baseline taken in
it after it starts. glibc reads MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ when a process starts,
so a server serves one environment: a point whose worker needs another gets a server started with
it (at most MAX_SERVERS are kept; an idle one is stopped first). The rest of the environment is
the caller's at the time of each start, as with exec.

Servers live as long as the process that started them (a sweep, a test session, a dask worker) and
stop when it exits or dies. `server_pids()` names them, so that a check for processes left behind
can tell them from a worker or engine.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Literal, Protocol

from mmbench.errors import MmbenchError
from mmbench.launch.client import ForkedProcess, ForkServer, Stdio

StartMethod = Literal["fork", "exec"]
START_METHODS: tuple[StartMethod, ...] = ("fork", "exec")
DEFAULT_START_METHOD: StartMethod = "fork"
PARENT_PID = "{parent_pid}"  # in argv: the pid of the child's parent, which it dies with
MAX_SERVERS = 4
# Variables that libraries read once, when the process starts or loads them (glibc's allocator,
# the dynamic loader, OpenMP and BLAS thread pools, the interpreter): a server serves one set of
# them. Every other variable is set in the forked child's os.environ, as the harness has it then.
STARTUP_ENV_PREFIXES = (
    "MALLOC_",
    "GLIBC_TUNABLES",
    "LD_",
    "OMP_",
    "GOMP_",
    "KMP_",
    "OPENBLAS_",
    "MKL_",
    "PYTHON",
)

__all__ = [
    "DEFAULT_START_METHOD", "PARENT_PID", "START_METHODS", "ForkedProcess", "Process", "StartMethod",
    "check_start_method", "launch", "prestart", "server_pids", "shutdown",
]  # fmt: skip


class Process(Protocol):
    """What subprocess.Popen and ForkedProcess share, as the harness uses it."""

    pid: int
    stdin: IO[bytes] | None
    stdout: IO[bytes] | None
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


_servers: OrderedDict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ForkServer] = OrderedDict()
_lock = threading.Lock()


def check_start_method(method: str) -> StartMethod:
    for known in START_METHODS:
        if method == known:
            return known
    raise MmbenchError(f"unknown start method {method!r}; choose one of: {', '.join(START_METHODS)}")


def _startup_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(STARTUP_ENV_PREFIXES)))


def _server(preload: Sequence[str], env: Mapping[str, str]) -> ForkServer:
    """The server for (preload, the start-up variables of env), started if need be. Only the
    registry is locked while a server starts: the worker's and the engine's start at once."""
    key = (tuple(preload), _startup_env(env))
    with _lock:
        server = _servers.get(key)
        if server is None or not server.usable:
            if server is not None:
                server.close()
                del _servers[key]
            idle = [k for k, s in _servers.items() if not s.busy]
            for old in idle[: max(0, len(_servers) + 1 - MAX_SERVERS)]:
                _servers.pop(old).close()
            server = ForkServer(preload, env)
            _servers[key] = server
        _servers.move_to_end(key)
    return server.ensure_started()


def prestart(entry: str, *, preload: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
    """Start the fork server that launch(entry, method="fork", ...) will use, on a thread, and
    return at once; a failure shows when launch() is called."""

    def start() -> None:
        with contextlib.suppress(Exception):  # launch() starts it again and reports why it fails
            _server([entry.split(":")[0], *preload], dict(os.environ if env is None else env))

    threading.Thread(target=start, name="mmbench-prestart", daemon=True).start()


def launch(
    entry: str,
    argv: Sequence[str],
    *,
    method: StartMethod = DEFAULT_START_METHOD,
    preload: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stdin: Stdio = subprocess.DEVNULL,
    stdout: Stdio = subprocess.DEVNULL,
    stderr: Stdio = None,
) -> Process:
    """Start `entry` ("pkg.module:function", the function taking argv) as a new process.

    exec runs `python -m pkg.module ARGV`; fork asks the server for (preload, env) to fork a child
    that calls the function. `preload` names more modules, or "module:function" warm-ups, for the
    server to import or run first (fork only). PARENT_PID in argv becomes the pid of the child's
    parent.
    """
    environment = dict(os.environ if env is None else env)
    if method == "exec":
        module = entry.split(":")[0]
        args = [str(os.getpid()) if a == PARENT_PID else a for a in argv]
        return subprocess.Popen(
            [sys.executable, "-m", _runnable(module), *args], env=environment, stdin=stdin, stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
    server = _server([entry.split(":")[0], *preload], environment)
    parent = server.pid
    args = [str(parent) if a == PARENT_PID else a for a in argv]
    return server.spawn(entry, args, environment, stdin, stdout, stderr)


def _runnable(module: str) -> str:
    """`python -m` takes a package for its __main__ module."""
    return module.removesuffix(".__main__")


def server_pids() -> set[int]:
    with _lock:
        return {s.pid for s in _servers.values() if s.pid is not None and s.alive}


def shutdown() -> None:
    """Stop every fork server of this process (also run at exit)."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.close()


def _forget_in_child() -> None:
    # A fork of this process (not one of ours) must not hold our servers' sockets open.
    for server in _servers.values():
        server.forget()
    _servers.clear()
    global _lock
    _lock = threading.Lock()


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_in_child)


def write_result(path: str, data: bytes) -> None:
    """A child's result, for its parent to read once the child has exited: written whole or not at
    all (a temporary file beside it, then renamed)."""
    out = Path(path)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
