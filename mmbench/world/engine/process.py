"""Start, check and stop the engine process. It is used only after a readiness check and is
always stopped, also when the run that needed it fails."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from mmbench.errors import MmbenchError
from mmbench.world.engine.app import EngineConfig

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class EngineHandle:
    url: str
    pid: int


class EngineProcess:
    def __init__(self, config: EngineConfig, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _stderr_tail(self, limit: int = 400) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text[-limit:].replace("\n", " | ") or "(no output)"

    def _read_handshake(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MmbenchError(f"engine did not report its port within {self.ready_timeout_s:.0f} s")
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise MmbenchError(f"engine exited before it was ready: {self._stderr_tail()}")
                buf += chunk
        finally:
            sel.close()
        return json.loads(buf.split(b"\n", 1)[0])

    def start(self) -> EngineHandle:
        cfg = self.config
        cmd = [
            sys.executable, "-m", "mmbench.world.engine",
            "--cache-bytes", str(cfg.cache_bytes),
            "--max-body-bytes", str(cfg.max_body_bytes),
            "--seed", str(cfg.seed),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
        )
        deadline = time.monotonic() + self.ready_timeout_s
        try:
            hello = self._read_handshake(deadline)
            self.url = f"http://127.0.0.1:{int(hello['port'])}"
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return EngineHandle(self.url, self.proc.pid)

    def _wait_ready(self, deadline: float) -> None:
        """Poll GET /health until it answers 200: the engine is used only once it does."""
        assert self.proc is not None
        delay = 0.005
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise MmbenchError(f"engine exited before it was ready: {self._stderr_tail()}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise MmbenchError(f"engine was not ready within {self.ready_timeout_s:.0f} s")
                time.sleep(delay)  # back-off between readiness probes, not a stand-in for one
                delay = min(delay * 2, 0.2)

    def stats(self) -> dict[str, Any]:
        if self.url is None:
            raise MmbenchError("engine is not running")
        with httpx.Client(timeout=30.0) as client:
            return client.get(f"{self.url}/stats").json()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()
        self.proc = None

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
