"""The fork server (`python -m mmbench.launch.server FD MODULE[:WARMUP]...`): imports the heavy
modules once (and runs their warm-up functions), then forks a fresh child for every request on
the control socket FD.

A request is one SOCK_SEQPACKET message: JSON {"entry": "pkg.mod:func", "argv": [...], "cwd": ...,
"env": {...} or null, "stdio": [bool, bool, bool]} with the file descriptors of the child's
stdin, stdout and stderr attached (SCM_RIGHTS) for the ones marked true; the others are /dev/null.
The server answers {"pid": N} at once and {"exit": N, "code": C} when the child ends (C as
Popen's returncode: negative for a signal). The child runs `func(argv)` and leaves with os._exit, skipping the
interpreter's teardown.

The server stops, killing any child still running, when the control socket closes: the harness
that owns it exited or died, so nothing outlives it. It ignores SIGINT (Ctrl-C is the harness's to
handle); its children get the default handler back, as a freshly started process has.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

from mmbench.launch.lifecycle import set_process_name

MAX_MESSAGE = 1 << 20
STDIO = 3
SERVER_NAME = "mmbench-zygote"
THREADS_SETTLE_S = 2.0


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # SystemExit("message"), as the interpreter does
    return 1


def _child(request: dict[str, Any], fds: list[int], closing: list[int]) -> NoReturn:
    """Become the requested process: our stdio, our argv, its entry point; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in closing:
            os.close(fd)
        given = iter(fds)
        devnull = os.open(os.devnull, os.O_RDWR)
        for target, passed in enumerate(request["stdio"]):
            os.dup2(next(given) if passed else devnull, target)
        for fd in [*fds, devnull]:
            if fd > 2:
                os.close(fd)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        if request.get("env") is not None:
            os.environ.clear()
            os.environ.update(request["env"])
        module, func = request["entry"].split(":")
        sys.argv = [module, *request["argv"]]
        code = _exit_code(getattr(importlib.import_module(module), func)(list(request["argv"])))
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _stop(children: set[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _threads_settle(at_most: int, timeout_s: float = THREADS_SETTLE_S) -> int:
    """The thread count once it is at most `at_most`, or what it is after timeout_s: a joined
    thread leaves /proc/self/task a moment after its join returns."""
    deadline = time.monotonic() + timeout_s
    while (n := _threads()) > at_most and time.monotonic() < deadline:
        time.sleep(0.005)  # polling the condition itself, bounded by the deadline
    return n


def _preload(items: list[str]) -> None:
    """Import each "module", and call each "module:function" (a warm-up). A fork copies only the
    thread that forks: a warm-up that leaves a thread running (torch's OpenMP pool, an executor)
    would hand every child a library that believes in threads it does not have, so it is refused."""
    for item in items:
        name, _, func = item.partition(":")
        module = importlib.import_module(name)
        if func:
            before = _threads()
            getattr(module, func)()
            left = _threads_settle(before) - before
            if left > 0:
                raise RuntimeError(f"{item} left {left} thread(s) running; it cannot precede a fork")


def serve(sock: socket.socket, preload: list[str]) -> None:
    _preload(preload)
    # What the imports made is moved out of the collector's way: the children's collections then
    # leave these pages alone (fewer copy-on-write copies), as their own gc.freeze() does later.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD reaches wake_w
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    _send(sock, {"ready": os.getpid()})
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj is not sock:
                    os.read(wake_r, 4096)
                    continue
                try:
                    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, STDIO)
                except ConnectionResetError:
                    data, fds = b"", []
                if not data:
                    return  # the harness closed the socket or died
                request = json.loads(data)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _child(request, fds, [sock.fileno(), wake_r, wake_w])
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                _send(sock, {"pid": pid})
            _reap(sock, children)
    finally:
        _stop(children)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    set_process_name(SERVER_NAME)
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us ends, and a harness may
    # start the server from a short-lived thread. The closed control socket is the signal instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    try:
        serve(sock, args[1:])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the harness is gone: _stop has ended the children
    finally:
        sock.close()


if __name__ == "__main__":
    main()
