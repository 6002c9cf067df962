"""Start, check and stop the engine process. It is used only after a readiness check and is
always stopped, also when the run that needed it fails.

With `restart_every` > 0 the engine exits by itself after answering every N-th request, and a
supervisor thread starts the next incarnation on the same port (with an empty cache), counts the
restart, and folds the exited incarnation's final stats (it writes them to a file before it
exits) into running sums, so that `stats()` counts every request of the point. The next
incarnation is started ahead as a standby (imported, waiting for its go before it binds), so a
restart's outage is the old incarnation's shutdown plus a bind, not an interpreter start-up. An
incarnation that exits any other way (killed, crashed) is not restarted: the engine is then
down for good and `failure` says why.

Every incarnation is a new process, forked from a fork server that has imported the engine
(`start_method="fork"`, the default) or started as a fresh interpreter (`"exec"`): see mmbench.launch.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from mmbench.errors import MmbenchError
from mmbench.launch import DEFAULT_START_METHOD, PARENT_PID, Process, StartMethod, launch
from mmbench.launch.lifecycle import Started
from mmbench.world.engine.app import EngineConfig
from mmbench.world.engine.stats import EngineStats
from mmbench.world.procmem import vmhwm_of

READY_TIMEOUT_S = 60.0
# The engine's states: up (serving, or its incarnation just exited), restarting, down for good, stopped.
UP, RESTARTING, DOWN, STOPPED = "up", "restarting", "down", "stopped"
ENTRY = "mmbench.world.engine.__main__:main"
PRELOAD = ("mmbench.world.engine.__main__:prewarm",)  # what a fork server runs once for every engine


def _http_client() -> httpx.Client:
    """A client for the harness's own requests to the engine (readiness, stats). Plain HTTP on
    loopback: no TLS context (building one costs ~50-300 ms of CPU), no proxy from the environment,
    a fresh connection per request (one to an incarnation that is gone is never reused)."""
    return httpx.Client(verify=False, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


@dataclass(frozen=True, slots=True)
class EngineAddress:
    url: str
    pid: int


def _end(proc: Process | None) -> None:
    """Kill a process if it still runs, reap it, close its pipes. An engine keeps nothing that must
    outlive it (its final stats are read over HTTP first; a planned restart writes its own before
    it exits), and uvicorn would notice a SIGTERM only at its next 0.1 s tick."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


class EngineProcess(Started):
    def __init__(
        self, config: EngineConfig, ready_timeout_s: float = READY_TIMEOUT_S,
        start_method: StartMethod = DEFAULT_START_METHOD,
    ) -> None:  # fmt: skip
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.start_method = start_method
        self.proc: Process | None = None
        self.url: str | None = None
        self.port: int | None = None
        self.restarts = 0  # incarnations started after the first
        self.failure: str | None = None  # why the engine is down for good
        self.flags: str | None = None  # a real engine's command line; mmbench's engine has its config
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self._dir: tempfile.TemporaryDirectory[str] | None = None  # incarnations' final stats
        self._stats_paths: dict[int, str] = {}  # pid -> where that incarnation writes them
        self._spawned = 0
        self._standby: Process | None = None  # the next incarnation, waiting
        self._cond = threading.Condition()
        self._state = UP
        self._stopping = False
        self._supervisor: threading.Thread | None = None
        self._folded: EngineStats | None = None  # the counters of exited incarnations, summed
        self._folded_pids: set[int] = set()
        self._http = _http_client()

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc else None

    def _stderr_tail(self, limit: int = 400) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            self._stderr.seek(0, os.SEEK_END)  # the children share this offset: keep appending
        except ValueError:  # closed
            return "(no output)"
        return text[-limit:].replace("\n", " | ") or "(no output)"

    def _read_handshake(self, proc: Process, deadline: float) -> dict[str, Any]:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MmbenchError(f"engine did not report its port within {self.ready_timeout_s:.0f} s")
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise MmbenchError(f"engine exited before it was ready: {self._stderr_tail()}")
                buf += chunk
        finally:
            sel.close()
        return json.loads(buf.split(b"\n", 1)[0])

    def _command(self, port: int, standby: bool) -> tuple[list[str], str | None]:
        cfg = self.config
        cmd = [
            "--port", str(port),
            "--cache-bytes", str(cfg.cache_bytes),
            "--max-body-bytes", str(cfg.max_body_bytes),
            "--seed", str(cfg.seed),
            "--evict-rate", repr(cfg.evict_rate),
            "--error-rate", repr(cfg.error_rate),
            "--delay-ms", repr(cfg.delay_ms),
            "--restart-every", str(cfg.restart_every),
            "--dtype", cfg.dtype,
            "--parent-pid", PARENT_PID,
        ]  # fmt: skip
        if cfg.allowed_media_dir is not None:
            cmd += ["--allowed-local-media-path", cfg.allowed_media_dir]
        stats_path = None
        if self._dir is not None:
            self._spawned += 1
            stats_path = str(Path(self._dir.name, f"stats-{self._spawned}.json"))
            cmd += ["--stats-file", stats_path]
        if standby:
            cmd.append("--standby")
        return cmd, stats_path

    def _spawn(self, port: int, standby: bool = False) -> Process | None:
        """Start an incarnation (a standby waits for its go before it binds); None once stop()
        has begun. It is registered under the lock, so that stop() always sees what it must end."""
        with self._cond:
            if self._stopping:
                return None
            argv, stats_path = self._command(port, standby)
            stdin = subprocess.PIPE if standby else subprocess.DEVNULL
            proc = launch(
                ENTRY,
                argv,
                method=self.start_method,
                preload=PRELOAD,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
            if stats_path is not None:
                self._stats_paths[proc.pid] = stats_path
            if standby:
                self._standby = proc
            else:
                self.proc = proc
        return proc

    def _serve(self, proc: Process) -> None:
        """Wait for an incarnation's handshake (its port), then for it to answer /health."""
        deadline = time.monotonic() + self.ready_timeout_s
        hello = self._read_handshake(proc, deadline)
        self.port = int(hello["port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready(proc, deadline)

    def start(self) -> EngineAddress:
        if self.config.restart_every > 0:
            self._dir = tempfile.TemporaryDirectory(prefix="mmbench-engine-")
        try:
            proc = self._spawn(0)
            if proc is None:
                raise MmbenchError("engine was stopped before it was ready")
            self._serve(proc)
        except BaseException:
            self.stop()
            raise
        assert self.url is not None
        if self.config.restart_every > 0:
            self._supervisor = threading.Thread(target=self._supervise, name="engine-supervisor", daemon=True)
            self._supervisor.start()
        return EngineAddress(self.url, proc.pid)

    def _wait_ready(self, proc: Process, deadline: float) -> None:
        """Poll GET /health until it answers 200: the engine is used only once it does."""
        delay = 0.005
        while True:
            if proc.poll() is not None:
                raise MmbenchError(f"engine exited before it was ready: {self._stderr_tail()}")
            try:
                # The engine listens before it reports its port: this first request normally waits
                # in the backlog and is answered as soon as the server runs.
                if self._http.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise MmbenchError(f"engine was not ready within {self.ready_timeout_s:.0f} s")
            time.sleep(delay)  # back-off between readiness probes, not a stand-in for one
            delay = min(delay * 2, 0.2)

    # --- the supervisor (restart_every > 0) ------------------------------------------------

    def _fold(self, pid: int, stats: EngineStats) -> None:
        """Add an exited incarnation's final stats to the running sums (under the lock)."""
        if pid in self._folded_pids:
            return
        self._folded_pids.add(pid)
        self._folded = stats if self._folded is None else self._folded.plus(stats)

    def _final_stats(self, proc: Process) -> EngineStats | None:
        path = self._stats_paths.get(proc.pid)
        if path is None:
            return None
        try:
            return EngineStats.decode(Path(path).read_bytes())
        except OSError:
            return None

    def _promote(self) -> Process | None:
        """The standby becomes the engine: it binds the port and serves. None once stop() has begun."""
        with self._cond:
            standby = self._standby
            if self._stopping or standby is None:
                return None
            self._standby = None
            self.proc = standby
        assert standby.stdin is not None
        try:
            standby.stdin.write(b"go\n")
            standby.stdin.close()
        except OSError as exc:
            raise MmbenchError(f"the standby engine is gone ({exc}): {self._stderr_tail()}") from None
        self._serve(standby)
        return standby

    def _give_up(self, failure: str | None) -> None:
        """Down for good (or stopped): record why, wake the waiters, end the standby."""
        with self._cond:
            if failure is not None and not self._stopping:
                self.failure = self.failure or failure
            self._state = STOPPED if self._stopping else DOWN
            standby, self._standby = self._standby, None
            self._cond.notify_all()
        _end(standby)

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except BaseException as exc:  # never leave the state "up" behind a dead thread
            self._give_up(f"engine supervisor failed: {type(exc).__name__}: {exc}")
            _end(self.proc)
            raise

    def _supervise_loop(self) -> None:
        while True:
            # The next incarnation imports everything now and waits, so a restart skips start-up.
            self._spawn(self.port or 0, standby=True)
            proc = self.proc
            assert proc is not None
            code = proc.wait()
            final = self._final_stats(proc)
            with self._cond:
                if final is not None:
                    self._fold(proc.pid, final)
                planned = code == 0 and final is not None and final.requests >= self.config.restart_every
                if not self._stopping and planned:
                    self._state = RESTARTING
                    self._cond.notify_all()
            if self._stopping or not planned:
                self._give_up(f"engine exited with code {code}: {self._stderr_tail()}")
                return
            if proc.stdout is not None:
                proc.stdout.close()
            try:
                new = self._promote()
            except Exception as exc:
                self._give_up(f"engine restart failed: {exc}")
                _end(self.proc)
                return
            if new is None:  # stop() came first
                self._give_up(None)
                return
            with self._cond:
                self.restarts += 1
                self._state = UP
                self._cond.notify_all()

    def _settled(self, deadline: float) -> str:
        """Wait (under the lock) until the engine serves or is down for good; its state."""
        while True:
            proc = self.proc
            exited = self._supervisor is not None and proc is not None and proc.poll() is not None
            if not (self._state == RESTARTING or (self._state == UP and exited)):
                return self._state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._state
            self._cond.wait(min(remaining, 0.05))

    # --- what the harness and the tests use ------------------------------------------------

    def _merged(self, snapshot: EngineStats) -> EngineStats:
        summed = snapshot if self._folded is None else snapshot.plus(self._folded)
        return replace(summed, restarts=self.restarts)

    def stats(self, trim: bool = False) -> EngineStats:
        """The engine's stats, its counters summed over every incarnation, and `restarts`."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            with self._cond:
                state = self._settled(deadline)
                if state != UP or self.url is None:
                    raise MmbenchError(f"engine is not running{': ' + self.failure if self.failure else ''}")
                url = self.url
            try:
                params = {"trim": "1"} if trim else None
                snapshot = EngineStats.decode(
                    self._http.get(f"{url}/stats", params=params, timeout=30.0).content
                )
            except httpx.TransportError:
                snapshot = None  # between incarnations: ask again once the next one serves
            with self._cond:
                # Counted once: the incarnation that answered is the current one and not yet folded.
                current = self.pid
                answered_by = (snapshot.pid or current) if snapshot is not None else None
                if snapshot is not None and answered_by == current and current not in self._folded_pids:
                    return self._merged(snapshot)
            if time.monotonic() > deadline:
                raise MmbenchError(f"engine stats unavailable within {self.ready_timeout_s:.0f} s")
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """The process the engine runs in now (its RSS is the engine's)."""
        pid = self.pid
        return [pid] if pid is not None else []

    def reset_peaks(self) -> None:
        """Nothing: a new engine's VmHWM is the point's (its start-up stays below what it serves)."""

    def hwm(self) -> int | None:
        return vmhwm_of(self.pid)

    def alive(self) -> bool:
        """Serving, or (with restarts) between two incarnations of a planned restart."""
        with self._cond:
            if self._supervisor is None:
                return self.proc is not None and self.proc.poll() is None
            state = self._settled(time.monotonic() + self.ready_timeout_s)
            return state == UP and self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the supervisor, the engine and its standby; idempotent."""
        with self._cond:
            self._stopping = True
            proc, standby = self.proc, self._standby
            self._standby = None
            self._cond.notify_all()
        _end(standby)
        _end(proc)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=timeout_s + 5)
        with self._cond:  # what the supervisor registered before it saw the stop
            late = [p for p in (self.proc, self._standby) if p is not None and p is not proc]
            self._state = STOPPED
            self.proc = self._standby = None
        for p in late:
            _end(p)
        self._http.close()
        if proc is None:
            return
        self._stderr.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
