"""Entry points for tests/unit/test_launch.py: what a forked or exec'd child runs (each takes argv)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path


def report(argv: list[str]) -> int:
    """Echo a line from stdin, and say what this process sees, as JSON on stdout; exit with argv[0]."""
    line = sys.stdin.readline().strip()
    print(json.dumps({
        "argv": argv, "line": line, "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(),
        "env": os.environ.get("MMBENCH_TEST_VAR"),
        "startup_env": Path("/proc/self/environ").read_bytes().decode(errors="replace").split("\0"),
    }), flush=True)  # fmt: skip
    print("to stderr", file=sys.stderr, flush=True)
    return int(argv[0]) if argv else 0


def wait_for_eof(argv: list[str]) -> None:
    """Say hello, then block until stdin closes (a child to be killed)."""
    print("ready", flush=True)
    sys.stdin.read()


def fail(argv: list[str]) -> None:
    raise RuntimeError("boom in the child")


def leave_a_thread() -> None:
    """A warm-up a fork server must refuse: it leaves a thread running."""
    threading.Thread(target=threading.Event().wait, daemon=True).start()


def __main_for_exec() -> None:  # pragma: no cover - run through `python -m`
    sys.exit(report(sys.argv[1:]))


if __name__ == "__main__":
    __main_for_exec()
