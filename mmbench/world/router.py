"""vllm-router (PyPI `vllm-router`, vllm-project/router, a Rust router run in-process by its Python
launcher) in front of a fleet of engines: started, checked, measured and stopped like an engine.

It runs in this interpreter's environment (mmbench pins it in its dev extra), on 127.0.0.1 and two
ports the OS gave (the router's and its Prometheus exporter's), in a session of its own, dying with
mmbench (PR_SET_PDEATHSIG). It is used only once GET /readiness says every worker is healthy (asked,
with a back-off), and always stopped: SIGTERM to its session, then SIGKILL.

What it forwards: `/inference/v1/generate` is one of its typed routes (retried, policy-routed; the
body passes through, with `"stream": false` added). Every other path goes to ONE worker the policy
picks, so a fleet's per-replica calls (/stats, /metrics, cache resets) go to each replica directly.
What it reports: its Prometheus counters (requests per route, per-worker decisions and outcomes,
retries, circuit-breaker state) and its process tree's memory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata

import httpx
import psutil

from mmbench.errors import MmbenchError
from mmbench.launch.lifecycle import Started, free_port, spawn_ready, stop_session, wait_ready
from mmbench.world.procmem import vmhwm_of

HOST = "127.0.0.1"
PACKAGE = "vllm-router"
PINNED = "0.1.17"  # what the flags and metric names here were read from (pyproject.toml pins it)
READY_TIMEOUT_S = 60.0  # about 1-2 s here once its workers answer /health
STOP_GRACE_S = 5.0
# The launcher: the router dies with its parent (SIGKILL: the Rust server ignores nothing), then
# runs what the package's `vllm-router` entry point runs, without its launcher's imports of the
# debugging load balancer (aiohttp, fastapi: a second of start-up here).
_LAUNCH = (
    "import argparse, ctypes, os, signal, sys; "
    "ctypes.CDLL('libc.so.6').prctl(1, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(1); "
    "import setproctitle; setproctitle.setproctitle('vllm::router'); "
    "from vllm_router.router_args import RouterArgs; from vllm_router.router import Router; "
    "p = argparse.ArgumentParser(prog='vllm-router'); RouterArgs.add_cli_args(p, use_router_prefix=False); "
    "a = RouterArgs.from_cli_args(p.parse_args(sys.argv[2:]), use_router_prefix=False); "
    "a._validate_router_args(); Router.from_args(a).start()"
)


def router_version() -> str:
    """The installed vllm-router's version; a one-line error where it is missing."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise MmbenchError(
            f"--replicas needs {PACKAGE} {PINNED} in mmbench's environment: make install (or "
            f"pip install {PACKAGE}=={PINNED})"
        ) from None


def router_flags(policy: str, retries: bool) -> list[str]:
    """The router's own flags for a point (without workers, host and ports): the policy, and its
    retries and circuit breaker as shipped or disabled. Workers are checked once a second while it
    starts (its default is 30 s), and the router logs warnings only."""
    flags = ["--policy", policy, "--worker-startup-check-interval", "1", "--log-level", "warning"]
    if not retries:
        flags += ["--disable-retries", "--disable-circuit-breaker"]
    return flags


@dataclass(frozen=True, slots=True)
class RouterReading:
    """The router at one moment: its counters and its tree's memory."""

    counters: dict[str, float]
    rss_bytes: int


class VllmRouter(Started):
    def __init__(
        self, workers: list[str], policy: str, retries: bool = True, ready_timeout_s: float = READY_TIMEOUT_S
    ) -> None:  # fmt: skip
        self.workers = list(workers)
        self.flags = shlex.join(router_flags(policy, retries))
        self._flags = router_flags(policy, retries)
        self.ready_timeout_s = ready_timeout_s
        self.version = f"{PACKAGE} {router_version()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.metrics_url: str | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        limits = httpx.Limits(max_keepalive_connections=0)
        self._http = httpx.Client(trust_env=False, timeout=10.0, limits=limits)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self, port: int, metrics_port: int) -> list[str]:
        return [
            sys.executable, "-c", _LAUNCH, str(os.getpid()),
            "--worker-urls", *self.workers, "--host", HOST, "--port", str(port),
            "--prometheus-host", HOST, "--prometheus-port", str(metrics_port), *self._flags,
        ]  # fmt: skip

    def start(self) -> None:
        port, metrics_port = free_port(), free_port()
        self.url, self.metrics_url = f"http://{HOST}:{port}", f"http://{HOST}:{metrics_port}/metrics"
        spawn_ready(self.command(port, metrics_port), self._log, None, self._wait_ready, self.stop)

    def log_tail(self, limit: int = 300) -> str:
        try:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace")
            self._log.seek(0, os.SEEK_END)
        except ValueError:
            return "(no output)"
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1][-limit:] if lines else "(no output)"

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Poll GET /readiness until every worker is healthy (the router answers 503 before)."""
        self.proc = proc  # stop() stops it, ready or not

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                reply = self._http.get(f"{self.url}/readiness", timeout=2.0)
                return reply.status_code == 200 and reply.json().get("healthy_workers") == len(self.workers)
            return False

        timeout, tail = self.ready_timeout_s, self.log_tail
        wait_ready(proc, ready, "vllm-router", timeout, tail, 0.02, 0.2, probe="GET /readiness")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to its session, then SIGKILL; idempotent."""
        proc = self.proc
        if proc is not None:
            stop_session(proc, STOP_GRACE_S)
            self.proc = None
        self._http.close()
        with contextlib.suppress(ValueError):
            self._log.close()

    # --- what it measured ----------------------------------------------------------------

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return []

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def hwm(self) -> int | None:
        return vmhwm_of(self.pid)

    def counters(self) -> dict[str, float]:
        """Its Prometheus exporter's counters and gauges, "name{labels}" -> value ({} unreadable)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self._http.get(self.metrics_url or "").text
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.type not in ("counter", "gauge", "unknown", "histogram"):
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def reading(self) -> RouterReading:
        return RouterReading(self.counters(), self.rss_bytes())


def counted(counters: dict[str, float], name: str, label: str | None = None) -> float:
    """The sum of a counter's samples (those whose labels contain `label`, where given)."""
    total = 0.0
    for key, value in counters.items():
        base = key.split("{", 1)[0]
        if base in (name, f"{name}_total") and (label is None or label in key):
            total += value
    return total


def since(now: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counters (`*_total`, `*_sum`, `*_count`) counted from `before`; gauges as they are now."""

    def counter(key: str) -> bool:
        return key.split("{", 1)[0].endswith(("_total", "_sum", "_count"))

    return {k: round(v - before.get(k, 0.0), 6) if counter(k) else v for k, v in sorted(now.items())}
