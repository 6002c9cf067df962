"""The memory timeline of one point: the client's and the engine's RSS over the run.

A sampler thread in the harness reads both processes' RSS (psutil) every few milliseconds, stamped
with time.monotonic(); the worker reports when each rollout finished each turn, on the same clock
(CLOCK_MONOTONIC is system-wide on Linux, so stamps of the two processes compare). The timeline is
saved as one compact JSON file beside the results, and the record names it (`timeline_file`,
relative to the results directory), so that `mmbench plot` can draw memory over time.

Sampling misses spikes shorter than the interval: the exact peaks come from VmHWM (the client's
`rss_peak_bytes`, the engine's `engine_peak_rss_bytes`), not from here.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.results import atomic_write

SAMPLE_INTERVAL_S = 0.005
TIMELINES_DIR = "timelines"  # inside a results directory
TIMELINE_VERSION = 1
COLUMNS = ("t", "client_rss", "engine_rss")
# A pid, or how to find it now (the engine's pid changes when a fault restarts it), or the pids of
# a process tree now (a real vLLM: API server, engine core, worker), whose RSS is summed.
PidSource = int | Callable[[], int | list[int] | None] | None


class _RssReader:
    """RSS of one process or the sum over a tree, None while there is none (not started yet,
    exited, or restarting)."""

    def __init__(self, source: PidSource) -> None:
        self._source = source
        self._procs: dict[int, psutil.Process] = {}

    def _pids(self) -> list[int]:
        found = self._source() if callable(self._source) else self._source
        if found is None:
            return []
        return [found] if isinstance(found, int) else found

    def rss(self) -> int | None:
        pids = self._pids()
        total: int | None = None
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                total = (total or 0) + int(proc.memory_info().rss)
            except psutil.Error:
                self._procs.pop(pid, None)
        if len(self._procs) > len(pids):  # forget the processes that are gone
            self._procs = {p: self._procs[p] for p in pids if p in self._procs}
        return total


@dataclass(frozen=True, slots=True)
class Timeline:
    """Both processes' RSS over one point. Times are seconds since `t0` (a time.monotonic())."""

    t0: float
    t: list[float]
    client_rss: list[int | None]
    engine_rss: list[int | None]
    turn_ends: list[tuple[float, int, int]]  # (seconds since t0, rollout, turn), turn 1-based
    interval_s: float = SAMPLE_INTERVAL_S

    def __len__(self) -> int:
        return len(self.t)

    def with_turn_ends(self, stamps: Iterable[Sequence[float]]) -> Timeline:
        """The worker's (time.monotonic(), rollout, turn) stamps, on this timeline's clock."""
        ends = [(round(float(s[0]) - self.t0, 4), int(s[1]), int(s[2])) for s in stamps]
        return replace(self, turn_ends=sorted(ends))

    def peak(self, column: str) -> int | None:
        values = [v for v in getattr(self, column) if v is not None]
        return max(values) if values else None

    def turn_boundaries(self) -> list[tuple[int, float]]:
        """(turn, the time at which every rollout had finished it), in turn order."""
        last: dict[int, float] = {}
        for t, _, turn in self.turn_ends:
            last[turn] = max(t, last.get(turn, t))
        return sorted(last.items())

    def to_json(self) -> str:
        data = {
            "version": TIMELINE_VERSION,
            "t0": self.t0,
            "interval_s": self.interval_s,
            "columns": list(COLUMNS),
            "t": self.t,
            "client_rss": self.client_rss,
            "engine_rss": self.engine_rss,
            "turn_ends": [list(e) for e in self.turn_ends],
        }
        return json.dumps(data, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "timeline") -> Timeline:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MmbenchError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("version") != TIMELINE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise MmbenchError(
                f"{where}: not an mmbench timeline of version {TIMELINE_VERSION} ({version!r})"
            )
        try:
            t, client, engine = (list(data[c]) for c in COLUMNS)
            if not len(t) == len(client) == len(engine):
                raise ValueError("columns of different lengths")
            ends = [(float(e[0]), int(e[1]), int(e[2])) for e in data.get("turn_ends", [])]
            return cls(
                float(data["t0"]),
                [float(x) for x in t],
                [None if v is None else int(v) for v in client],
                [None if v is None else int(v) for v in engine],
                ends,
                float(data.get("interval_s", SAMPLE_INTERVAL_S)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MmbenchError(f"{where}: damaged timeline ({exc})") from None


class TimelineSampler:
    """Samples the client's and the engine's RSS on a daemon thread until stop()."""

    def __init__(self, client: PidSource, engine: PidSource, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._readers = (_RssReader(client), _RssReader(engine))
        self._t: list[float] = []
        self._client: list[int | None] = []
        self._engine: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmbench-timeline", daemon=True)
        self._t0: float | None = None

    def _sample(self) -> None:
        now = time.monotonic()
        client, engine = (r.rss() for r in self._readers)
        if self._t0 is None:
            self._t0 = now
        self._t.append(round(now - self._t0, 4))
        self._client.append(client)
        self._engine.append(engine)

    def _run(self) -> None:
        # On a fixed schedule, not "interval after the last sample": the reads take time too.
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._sample()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a busy machine): skip ahead rather than burst
                next_at = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> TimelineSampler:
        self._thread.start()
        return self

    def stop(self) -> Timeline:
        """Stop sampling (one last sample first) and return what was sampled."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._sample()
        assert self._t0 is not None
        return Timeline(self._t0, self._t, self._client, self._engine, [], self.interval_s)

    def __enter__(self) -> TimelineSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def timeline_name(config: PointConfig, repeat: int) -> str:
    """`<mode>-K<k>-<hash of every other parameter>-r<repeat>.json`: one file per point and repeat."""
    others = {k: v for k, v in config.to_dict().items() if k not in ("mode", "rollouts")}
    digest = hashlib.sha1(json.dumps(others, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.mode}-K{config.rollouts}-{digest}-r{repeat}.json"


def save_timeline(timeline: Timeline, directory: Path, config: PointConfig, repeat: int) -> Path:
    path = directory / timeline_name(config, repeat)
    atomic_write(path, timeline.to_json())
    return path


def load_timeline(path: Path) -> Timeline:
    try:
        text = path.read_text()
    except OSError as exc:
        raise MmbenchError(f"{path}: cannot read the timeline ({exc.strerror})") from None
    return Timeline.from_json(text, str(path))


def engine_peak(timeline: Timeline | None, engine_hwm: int | None) -> int | None:
    """The engine's peak RSS during the point: its VmHWM, or the timeline's peak where higher (an
    engine whose VmHWM mmbench cannot reset or read)."""
    sampled = timeline.peak("engine_rss") if timeline is not None else None
    peaks = [p for p in (engine_hwm, sampled) if p is not None]
    return max(peaks) if peaks else None


def keep_timeline(
    timeline: Timeline | None, turn_ends: Iterable[Sequence[float]], directory: Path | None,
    config: PointConfig, repeat: int,
) -> str | None:  # fmt: skip
    """Save the point's timeline with its turn ends, where there is a directory; its name relative
    to the results directory (the timeline directory's parent), for the record."""
    if timeline is None or directory is None or not len(timeline):
        return None
    path = save_timeline(timeline.with_turn_ends(turn_ends), directory, config, repeat)
    return f"{directory.name}/{path.name}"
