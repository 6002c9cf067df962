"""The fork server (mmbench.launch): forked children behave as freshly started ones to the harness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mmbench import launch
from mmbench.errors import MmbenchError
from mmbench.launch import PARENT_PID
from mmbench.launch.client import ForkServer

ROOT = Path(__file__).resolve().parents[2]
TARGETS = "tests.launch_targets"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the servers import the targets from the repository


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    s = ForkServer([TARGETS], ENV).start()
    yield s
    s.close()


def _report(proc: launch.Process, line: bytes = b"hello\n") -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    return dict(json.loads(out))


def test_a_forked_child_gets_its_stdio_argv_environment_cwd_and_exit_code(
    server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    err = tmp_path / "err.txt"
    with open(err, "wb") as err_file:
        proc = server.spawn(
            f"{TARGETS}:report", ["3", "x y"], {**ENV, "MMBENCH_TEST_VAR": "set after the server started"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file,
        )  # fmt: skip
        seen = _report(proc)
        assert proc.wait(timeout=30) == 3
    assert seen["argv"] == ["3", "x y"] and seen["line"] == "hello"
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == "set after the server started"
    assert seen["pid"] == proc.pid and seen["ppid"] == server.pid
    assert err.read_text() == "to stderr\n"
    assert proc.poll() == 3 and proc.returncode == 3


def test_a_failing_child_exits_1_with_its_traceback(server: ForkServer, tmp_path: Path) -> None:
    err = tmp_path / "err.txt"
    with open(err, "wb") as err_file:
        proc = server.spawn(f"{TARGETS}:fail", [], stderr=err_file)
        assert proc.wait(timeout=30) == 1
    assert "RuntimeError: boom in the child" in err.read_text()


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_signalled_child_is_reported_as_popen_does(server: ForkServer, how: str) -> None:
    proc = server.spawn(f"{TARGETS}:wait_for_eof", [], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    assert proc.poll() is None
    getattr(proc, how)()
    expected = -signal.SIGTERM if how == "terminate" else -signal.SIGKILL
    assert proc.wait(timeout=30) == expected
    assert not psutil.pid_exists(proc.pid)  # reaped by the server before it reported


def test_closing_the_server_ends_it_and_its_children() -> None:
    s = ForkServer([TARGETS], ENV).start()
    proc = s.spawn(f"{TARGETS}:wait_for_eof", [], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    server_pid = s.pid
    assert server_pid is not None
    s.close()
    assert not psutil.pid_exists(server_pid)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not psutil.pid_exists(proc.pid)
    with pytest.raises(MmbenchError, match="not running"):
        s.spawn(f"{TARGETS}:report", [])


def test_a_warm_up_that_leaves_a_thread_is_refused() -> None:
    with pytest.raises(MmbenchError, match=r"leave_a_thread left 1 thread\(s\) running"):
        ForkServer([f"{TARGETS}:leave_a_thread"], ENV).start()


@pytest.mark.parametrize("method", launch.START_METHODS)
def test_launch_runs_the_same_entry_either_way(method: launch.StartMethod) -> None:
    proc = launch.launch(
        f"{TARGETS}:report", ["0", PARENT_PID], method=method, env={**ENV, "MMBENCH_TEST_VAR": method},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen = _report(proc)
    assert proc.wait(timeout=60) == 0
    assert seen["env"] == method
    assert seen["argv"][1] == str(seen["ppid"])  # PARENT_PID names the real parent
    if method == "fork":
        assert seen["ppid"] in launch.server_pids()
    else:
        assert seen["ppid"] == os.getpid()


def test_a_start_up_variable_gets_a_server_started_with_it() -> None:
    """glibc reads MALLOC_* when a process starts: a forked child must come from a server exec'd with them."""
    pids = []
    for arena_max in (None, "2"):
        env = dict(ENV)
        if arena_max:
            env["MALLOC_ARENA_MAX"] = arena_max
        else:
            env.pop("MALLOC_ARENA_MAX", None)
        proc = launch.launch(f"{TARGETS}:report", [], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        seen = _report(proc)
        assert proc.wait(timeout=60) == 0
        assert ("MALLOC_ARENA_MAX=2" in seen["startup_env"]) == (arena_max == "2")
        pids.append(seen["ppid"])
    assert pids[0] != pids[1]
    assert set(pids) <= launch.server_pids()


def test_an_unknown_start_method_is_refused() -> None:
    with pytest.raises(MmbenchError, match="unknown start method 'spawn'; choose one of: fork, exec"):
        launch.check_start_method("spawn")
