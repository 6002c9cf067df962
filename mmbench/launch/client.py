"""The harness's side of a fork server: start it, ask it for a child, learn how the child ended.

`ForkedProcess` behaves as the parts of subprocess.Popen that the harness and the engine manager
use (pid, stdin, stdout, poll, wait, terminate, kill, returncode), so that a forked worker or
engine is handled exactly as a freshly started one.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from mmbench.errors import MmbenchError
from mmbench.launch.server import MAX_MESSAGE

START_TIMEOUT_S = 120.0  # a cold start imports torch from disk
REPLY_TIMEOUT_S = 30.0
# Where the server died before reporting a child's end, the child was killed with it.
LOST_CODE = -signal.SIGKILL
# What a stdio argument may be: subprocess.PIPE / DEVNULL, None (inherit ours), an fd or a file.
Stdio = int | IO[Any] | None


class ForkedProcess:
    """A child of a fork server, seen from the harness."""

    def __init__(
        self, server: ForkServer, pid: int, args: list[str], stdin: IO[bytes] | None, stdout: IO[bytes] | None
    ) -> None:
        self._server = server
        self.pid = pid
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Until its end is reported the child is unreaped (a zombie at worst): its pid is still its own.
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _child_end(spec: Stdio, index: int, mode: str) -> tuple[int | None, IO[bytes] | None, int | None]:
    """(fd the child gets or None for /dev/null, our end of a pipe, an fd to close once sent)."""
    if spec == subprocess.DEVNULL:
        return None, None, None
    if spec == subprocess.PIPE:
        r, w = os.pipe()
        ours, theirs = (w, r) if mode == "wb" else (r, w)
        return theirs, open(ours, mode), theirs
    if spec is None:
        return index, None, None
    if isinstance(spec, int):
        return spec, None, None
    return spec.fileno(), None, None


def _cwd() -> str | None:
    """Our working directory, for the child; None where it is gone (the child keeps the server's)."""
    try:
        return os.getcwd()
    except OSError:
        return None


class ForkServer:
    """One server process that has imported `preload` under environment `env`."""

    def __init__(self, preload: Sequence[str], env: Mapping[str, str]) -> None:
        self.preload = tuple(preload)
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._lock = threading.Lock()  # one request at a time
        self._replies: queue.Queue[int | None] = queue.Queue()
        self._cond = threading.Condition()
        self._codes: dict[int, int] = {}
        self._running: set[int] = set()
        self._dead = False
        self._closed = False
        self._failure: str | None = None  # why it could not start, for every thread that waited
        self._start_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._dead and self._proc.poll() is None

    @property
    def usable(self) -> bool:
        """Not yet started, starting, or serving: not failed, dead or closed."""
        return not self._closed and (self._proc is None or self.alive)

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._running)

    def _tail(self, limit: int = 400) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            self._stderr.seek(0, os.SEEK_END)
        except ValueError:
            return "(no output)"
        return text[-limit:].replace("\n", " | ") or "(no output)"

    def ensure_started(self) -> ForkServer:
        """Start the server unless it is (another thread may be starting it: wait for that)."""
        with self._start_lock:
            if self._proc is None and not self._closed:
                self.start()
        if not self.alive:
            raise MmbenchError(self._failure or f"the fork server is not running: {self._tail()}")
        return self

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mmbench.launch.server", str(theirs.fileno()), *self.preload],
                pass_fds=[theirs.fileno()], env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._stderr,
            )  # fmt: skip
        finally:
            theirs.close()
        self._sock = ours
        ours.settimeout(timeout_s)
        try:
            hello = ours.recv(MAX_MESSAGE)
        except TimeoutError:
            self._failure = f"the fork server did not start within {timeout_s:.0f} s"
            self.close()
            raise MmbenchError(self._failure) from None
        except OSError:
            hello = b""
        if not hello:
            self._sock = None
            ours.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)  # its traceback is written once it unwinds
            self._failure = f"the fork server exited while starting: {self._tail()}"
            self.close()
            raise MmbenchError(self._failure)
        ours.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="mmbench-forkserver", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                data = sock.recv(MAX_MESSAGE)
                if not data:
                    break
                message = json.loads(data)
                if "pid" in message:
                    self._replies.put(int(message["pid"]))
                else:
                    with self._cond:
                        pid = int(message["exit"])
                        self._codes[pid] = int(message["code"])
                        self._running.discard(pid)
                        self._cond.notify_all()
        except OSError:
            pass
        with self._cond:
            self._dead = True
            for pid in self._running:
                self._codes.setdefault(pid, LOST_CODE)
            self._running.clear()
            self._cond.notify_all()
        self._replies.put(None)

    def spawn(
        self, entry: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
        stdin: Stdio = subprocess.DEVNULL, stdout: Stdio = subprocess.DEVNULL, stderr: Stdio = None,
    ) -> ForkedProcess:  # fmt: skip
        """Fork a child that runs `entry` ("pkg.module:function") with `argv`, `env` as its
        os.environ (None: the server's), our working directory and these stdio."""
        ends = [_child_end(stdin, 0, "wb"), _child_end(stdout, 1, "rb"), _child_end(stderr, 2, "wb")]
        request = {
            "entry": entry, "argv": list(argv), "cwd": _cwd(), "stdio": [e[0] is not None for e in ends],
            "env": None if env is None else dict(env),
        }  # fmt: skip
        fds = [e[0] for e in ends if e[0] is not None]
        try:
            with self._lock:
                if self._sock is None or self._dead:
                    raise MmbenchError(f"the fork server is not running: {self._tail()}")
                socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
                try:
                    pid = self._replies.get(timeout=REPLY_TIMEOUT_S)
                except queue.Empty:
                    pid = None
                if pid is None:
                    raise MmbenchError(f"the fork server did not start {entry}: {self._tail()}")
                with self._cond:
                    if pid not in self._codes:
                        self._running.add(pid)
        except BaseException:
            for _, mine, _ in ends:
                if mine is not None:
                    mine.close()
            raise
        finally:
            for _, _, to_close in ends:
                if to_close is not None:
                    os.close(to_close)
        args = [entry, *argv]
        return ForkedProcess(self, pid, args, ends[0][1], ends[1][1])

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's returncode once it has ended; None if it still runs after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while pid not in self._codes:
                if self._dead:
                    return LOST_CODE
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._codes[pid]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the server (it kills any child still running); idempotent."""
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=timeout_s)
        self._stderr.close()

    def forget(self) -> None:
        """In a forked copy of the harness: drop our copy of the socket, leave the server alone."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._dead = True
