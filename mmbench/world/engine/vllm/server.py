"""A real vLLM OpenAI server, started for one point (or standalone), measured, and stopped.

It runs `vllm serve` in the vLLM environment's interpreter (mmbench.world.engine.vllm.env), on
127.0.0.1 and a port the OS gave, in a session of its own so that the API server, its engine core,
the engine's worker and whatever else vLLM starts end together. It is used only once GET /health
answers 200 (asked, with a back-off, never slept on), and always stopped: SIGTERM to the session,
then SIGKILL to it and to every process it was seen to have. The launcher (site/mmbench_vllm_serve.py)
also ends the session when mmbench itself dies.

What mmbench knows of it, as `stats()` (the same keys as the embedded engine's where they mean the
same): the RSS and CPU seconds of the whole process tree (psutil), each process kind's RSS
high-water mark since `reset_peaks()`, the bytes, requests and answers by status that its API
servers counted (site/mmbench_vllm_stats.py), and vLLM's own /metrics (multimodal cache queries and
hits, requests finished). A vLLM keeps no figure of its cache's bytes: those stay unknown (None).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from mmbench.errors import MmbenchError
from mmbench.launch.lifecycle import Started, free_port, spawn_ready, stop_session, wait_ready
from mmbench.world.engine.stats import EngineStats, KindUsage
from mmbench.world.engine.vllm.env import SITE_DIR, VllmEnv
from mmbench.world.engine.vllm.metrics import vllm_counters
from mmbench.world.procmem import vmhwm_of

HOST = "127.0.0.1"
READY_TIMEOUT_S = 300.0  # 27-60 s here; a loaded 2-core machine takes longer
STOP_GRACE_S = 10.0
# vLLM's dev endpoints (VLLM_SERVER_DEV_MODE=1) that empty what a point leaves in its caches
RESET_PATHS = ("/reset_mm_cache", "/reset_prefix_cache")
LAUNCHER = SITE_DIR / "mmbench_vllm_serve.py"
MIDDLEWARE = "mmbench_vllm_stats.Counter"
# Flags mmbench sets itself: an --engine-arg may not change them.
OWN_FLAGS = ("--host", "--port", "--served-model-name", "--middleware", "--uds")
# The process kinds of a vLLM tree, by the title vLLM gives each process (the rest: the API server).
KINDS = {"VLLM::EngineCore": "engine_core", "VLLM::Worker": "worker", "VLLM::APIServer": "api_server"}


def check_engine_args(args: list[str]) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in OWN_FLAGS:
            raise MmbenchError(f"--engine-arg {arg}: mmbench sets {flag} itself; leave it out")


def _kind(proc: psutil.Process, root: int) -> str:
    try:
        title = (proc.cmdline() or [""])[0]
    except psutil.Error:
        return "other"
    for prefix, kind in KINDS.items():
        if title.startswith(prefix):
            return kind
    return "api_server" if proc.pid == root else "other"


_EXCEPTION = re.compile(r"\b([A-Z]\w*(?:Error|Exception))\b")
_ACCESS_LOG = re.compile(r'"[A-Z]+ \S+ HTTP/[\d.]+" \d{3}')  # uvicorn's access lines
# vLLM's log prefix: "(EngineCore pid=12) ERROR 12-02 06:54:05 [core.py:906] "
_PREFIX = re.compile(
    r"^(\(\w+ pid=\d+\) )?((DEBUG|INFO|WARNING|ERROR|CRITICAL) +(\d\d-\d\d [\d:]+ )?(\[[^]]+\] )?)?"
)
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\w+)')


def _last_error_line(text: str, limit: int = 300) -> str:
    """Why vLLM stopped, from its log: the exceptions it raised, in order (the first with the
    function it was raised in), and the last one's message; its access log's "500 Internal Server
    Error" lines are answers, not causes. Else the last line."""
    lines = [_PREFIX.sub("", ln.strip()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not _ACCESS_LOG.search(ln)]
    raised = [(i, m.group(1)) for i, ln in enumerate(lines) for m in [_EXCEPTION.search(ln)] if m is not None]
    if not raised:
        return lines[-1][-limit:] if lines else "(no output)"
    names = list(dict.fromkeys(name for _, name in raised))
    first_at = raised[0][0]
    frames = [m for ln in lines[:first_at] for m in [_FRAME.search(ln)] if m is not None]
    if frames:
        names[0] += f" in {frames[-1].group(2)} ({Path(frames[-1].group(1)).name})"
    return f"{', '.join(names)}: {lines[raised[-1][0]][-limit:]}"


def _trim_count(directory: Path, pid: int) -> int:
    try:
        return int(Path(directory, f"{pid}.trimmed").read_text())
    except (OSError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class _Memory:
    """The tree's RSS and CPU seconds now, its VmHWM and both per process kind."""

    rss_bytes: int
    cpu_s: float
    peaks: dict[str, int]
    kinds: dict[str, KindUsage]


class VllmEngine(Started):
    """The harness's handle on a vLLM it started (the interface of EngineProcess it uses)."""

    restarts = 0  # never restarted: a dead vLLM ends the point

    def __init__(
        self, env: VllmEnv, model_dir: Path, served_name: str, args: list[str],
        ready_timeout_s: float = READY_TIMEOUT_S, host: str = HOST, port: int = 0,
    ) -> None:  # fmt: skip
        check_engine_args(args)
        self.env = env
        self.model_dir = model_dir
        self.served_name = served_name
        self.args = list(args)  # every flag after the model, but the host, port and middleware
        self.ready_timeout_s = ready_timeout_s
        self.host = host
        self.port = port  # 0: a free one
        self.url: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="mmbench-vllm-")
        self._log_path = Path(self._dir.name, "vllm.log")
        self._stats_dir = Path(self._dir.name, "stats")
        self._stats_dir.mkdir()
        self._trim_dir = Path(self._dir.name, "trim")  # the site shim's trim hook (see reset)
        self._trim_dir.mkdir()
        self._seen: dict[int, psutil.Process] = {}  # every process of the tree seen so far
        self._tree_at = 0.0
        # the harness's own few requests: no proxy from the environment, nothing kept between them
        self._http = httpx.Client(
            trust_env=False, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def flags(self) -> str:
        """The command's flags as recorded: everything but the host and port (they change per run)."""
        return shlex.join(["serve", str(self.model_dir), "--served-model-name", self.served_name, *self.args])

    def command(self, port: int) -> list[str]:
        return [
            str(self.env.python), str(LAUNCHER), str(os.getpid()), "serve", str(self.model_dir),
            "--served-model-name", self.served_name, "--host", self.host, "--port", str(port),
            "--middleware", MIDDLEWARE, *self.args,
        ]  # fmt: skip

    # --- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        port = self.port or free_port()
        self.url = f"http://{self.host}:{port}"
        env = self.env.environment()
        env["MMBENCH_VLLM_STATS_DIR"] = str(self._stats_dir)
        env["MMBENCH_VLLM_TRIM_DIR"] = str(self._trim_dir)
        # POST /reset_mm_cache and /reset_prefix_cache, which reset() asks for between two points
        env["VLLM_SERVER_DEV_MODE"] = "1"
        with open(self._log_path, "wb") as log:
            spawn_ready(self.command(port), log, env, self._wait_ready, self.stop)

    def log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-20_000:]
        except OSError:
            return ""

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """GET /health until it answers 200 (a port lost to another process between free_port and
        vLLM's bind shows as vLLM exiting before it was ready, with its bind error)."""
        self.proc = proc  # stop() stops it, ready or not

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                if self._http.get(f"{self.url}/health", timeout=5.0).status_code == 200:
                    self.tree()  # every process it runs with, before any is measured
                    return True
            return False

        last_words = lambda: f"its log ends: {_last_error_line(self.log_tail())}"  # noqa: E731
        wait_ready(proc, ready, "vLLM", self.ready_timeout_s, last_words, probe="GET /health")

    def stop(self) -> None:
        """SIGTERM to its session, then SIGKILL to the session and every process seen; idempotent."""
        proc = self.proc
        if proc is not None:
            self.tree()

            def stragglers() -> None:  # any that left the session
                for p in self._seen.values():
                    with contextlib.suppress(psutil.Error):
                        p.kill()

            stop_session(proc, STOP_GRACE_S, stragglers)
            psutil.wait_procs([p for p in self._seen.values() if p.pid != proc.pid], timeout=STOP_GRACE_S)
            self.proc = None
        self._http.close()
        self._dir.cleanup()

    # --- the process tree ----------------------------------------------------------------

    def tree(self, max_age_s: float = 0.0) -> list[psutil.Process]:
        """The live processes of the server's tree (the root and its descendants)."""
        now = time.monotonic()
        if self.proc is None:
            return []
        if now - self._tree_at > max_age_s or not self._seen:
            try:
                root = self._seen.get(self.proc.pid) or psutil.Process(self.proc.pid)
                found = [root, *root.children(recursive=True)]
            except psutil.Error:
                found = []
            for p in found:
                self._seen.setdefault(p.pid, p)
            self._tree_at = now
        return [p for p in self._seen.values() if p.is_running()]

    def pids(self) -> list[int]:
        """The tree's pids, refreshed at most every half second (the sampler asks every few ms)."""
        return [p.pid for p in self.tree(max_age_s=0.5)]

    def reset(self) -> None:
        """Between two points on this engine: empty what the last one left in vLLM's caches (its
        multimodal processor cache and prefix cache), wait until it serves nothing, and have every
        process collect and trim (the site shim's hook), so that the next point's baseline is read
        from an engine in the state a fresh one reaches after its first point."""
        for path in RESET_PATHS:
            try:
                reply = self._http.post(f"{self.url}{path}", timeout=30.0)
            except httpx.HTTPError as exc:
                raise MmbenchError(f"vLLM did not answer POST {path} ({exc})") from None
            if reply.status_code != 200:
                raise MmbenchError(f"vLLM answered POST {path} with {reply.status_code}: {reply.text[:200]}")
        self._wait_idle()
        self._trim()

    def _wait_idle(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            busy = (self.metrics() or {}).get("requests_in_flight", 0.0)
            if not busy:
                return
            if time.monotonic() > deadline:
                raise MmbenchError(f"vLLM still served {busy:.0f} request(s) {timeout_s:.0f} s after a point")
            time.sleep(0.05)  # polling vLLM's own gauge, not a stand-in for it

    def _trim(self, timeout_s: float = 10.0) -> list[int]:
        """Every process that registered the trim hook collects and trims; the pids that did."""
        live = {p.pid for p in self.tree()}
        ready = [int(f.stem) for f in self._trim_dir.glob("*.ready") if f.stem.isdigit()]
        asked: dict[int, int] = {}
        for pid in ready:
            if pid not in live:
                continue
            before = _trim_count(self._trim_dir, pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR2)
                asked[pid] = before
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = [pid for pid, before in asked.items() if _trim_count(self._trim_dir, pid) > before]
            if len(done) == len(asked):
                return done
            time.sleep(0.02)  # polling the hook's files
        return [pid for pid, before in asked.items() if _trim_count(self._trim_dir, pid) > before]

    def reset_peaks(self) -> None:
        """Reset every process's VmHWM to its RSS now, so the peaks read later are the point's."""
        for p in self.tree():
            with contextlib.suppress(OSError):
                Path(f"/proc/{p.pid}/clear_refs").write_text("5")

    def _memory(self) -> _Memory:
        rss = 0
        cpu = 0.0
        peaks: dict[str, int] = {}
        # per process kind: its RSS and CPU seconds now (where the tree's memory and time are)
        kinds: dict[str, KindUsage] = {}
        root = self.pid or -1
        for p in self.tree():
            try:
                with p.oneshot():
                    own = p.memory_info().rss
                    t = p.cpu_times()
                    spent = t.user + t.system + t.children_user + t.children_system
                    hwm = vmhwm_of(p.pid)
            except psutil.Error:
                continue
            rss, cpu = rss + own, cpu + spent
            kind = _kind(p, root)
            peaks[kind] = peaks.get(kind, 0) + (hwm or 0)
            mine = kinds.get(kind, KindUsage(0, 0.0))
            kinds[kind] = KindUsage(mine.rss_bytes + own, mine.cpu_s + spent)
        return _Memory(rss, cpu, peaks, kinds)

    # --- what the harness asks -----------------------------------------------------------

    def counted(self) -> dict[str, Any]:
        """What its API servers counted (summed over their files)."""
        out: dict[str, Any] = {"requests": 0, "bytes_received": 0, "status_counts": {}}
        for path in self._stats_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            out["requests"] += int(data.get("requests", 0))
            out["bytes_received"] += int(data.get("bytes_received", 0))
            for status, n in dict(data.get("status_counts", {})).items():
                out["status_counts"][status] = out["status_counts"].get(status, 0) + int(n)
        return out

    def metrics(self) -> dict[str, float] | None:
        try:
            reply = self._http.get(f"{self.url}/metrics")
        except httpx.HTTPError:
            return None
        return vllm_counters(reply.text) if reply.status_code == 200 else None

    def health(self) -> int | None:
        """GET /health's status (200 serving, 503 its engine is dead), None when nothing answers."""
        try:
            return self._http.get(f"{self.url}/health", timeout=5.0).status_code
        except httpx.HTTPError:
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.health() == 200

    def hwm(self) -> int | None:
        """None: the tree's peak is its sampled sum (the processes peak at different moments);
        each kind's own VmHWM is in stats()["peaks"]."""
        return None

    @property
    def failure(self) -> str | None:
        """Why it no longer serves (its log's last error), or None while it does."""
        if self.alive():
            return None
        code = self.proc.poll() if self.proc is not None else None
        state = f"exited with code {code}" if code is not None else f"answers /health {self.health()}"
        return f"vLLM {state}: {_last_error_line(self.log_tail())}"

    def stats(self, trim: bool = False) -> EngineStats:
        """Its figures now, counters summed since it started (the harness subtracts the baseline's).
        `trim` is the embedded engine's: a vLLM is measured as it is."""
        del trim
        counted = self.counted()
        errors = sum(n for s, n in counted["status_counts"].items() if s.isdigit() and int(s) >= 400)
        memory = self._memory()
        metrics = self.metrics() or {}
        queries = metrics.get("mm_cache_queries")
        hits = metrics.get("mm_cache_hits")
        finished = metrics.get("requests_finished")
        return EngineStats(
            pid=self.pid,
            restarts=0,
            rss_bytes=memory.rss_bytes,
            cpu_s=memory.cpu_s,
            peaks=memory.peaks,
            kinds=memory.kinds,
            requests=counted["requests"],
            bytes_received=counted["bytes_received"],
            status_counts=counted["status_counts"],
            errors=errors,
            ok=counted["requests"] - errors,
            cache_queries=None if queries is None else int(queries),
            cache_hits=None if hits is None else int(hits),
            cache_misses=None if queries is None or hits is None else int(queries - hits),
            # vLLM preprocesses what its processor cache does not serve; it counts only raw media there
            preprocess_calls=None if queries is None or hits is None else int(queries - hits),
            finished=None if finished is None else int(finished),
        )
