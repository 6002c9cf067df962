"""`mmbench profile`'s core: one point measured with memray tracking the worker, and where its heap
goes at two moments.

- **high-water mark**: the allocations alive when the heap was largest (memray's peak);
- **retained**: the allocations alive when tracking stopped. The worker stops tracking right after
  its retained readings, while the K trajectories are still alive, so memray's "leaked" view of
  the capture is what the client retains.

Each allocation record is charged to its innermost stack frame in mmbench's own code (the *site*),
and each site to a category by its module and function (`CATEGORY_RULES`). One correction: the
renderer's output outlives the render (see `ATTRIBUTION`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engines import Embedded, EngineChoice
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import PointRecord, atomic_write
from mmbench.units import fmt_bytes

SCHEMA_VERSION = 2  # of sites.json; 2: its point is a results schema 6 record (nested)
DEFAULT_TOP = 15
FLAMEGRAPH_TIMEOUT_S = 900.0
SITES_JSON = "sites.json"
SITES_MD = "sites.md"
# flamegraph file per snapshot, and the memray flamegraph options that select the snapshot
FLAMEGRAPHS = {
    "high_water_mark": ("flamegraph.html", ()),
    "retained": ("flamegraph-retained.html", ("--leaks",)),
}

CATEGORIES = {
    "renderer": "renderer preprocessing",
    "transport": "transport encoding",
    "trajectory": "trajectory storage",
    "image_cache": "image cache",
    "engine_client": "engine client buffers",
    "sources": "sources",
    "other": "other mmbench",
    "outside": "outside mmbench",
}
# (path under the package's parent, function or "*") -> category; a path ending in "/" is a package.
# The first rule that matches a site wins, so exceptions come before their module's "*".
CATEGORY_RULES: tuple[tuple[str, str, str], ...] = (
    ("mmbench/world/renderer.py", "put", "image_cache"),  # FifoCache
    ("mmbench/world/renderer.py", "get", "image_cache"),
    ("mmbench/world/renderer.py", "*", "renderer"),  # decode, hash, preprocess, bfloat16 cast
    ("mmbench/world/geometry.py", "*", "renderer"),
    ("mmbench/world/codec.py", "pixel_checksum", "renderer"),  # called by Renderer.process
    ("mmbench/world/codec.py", "*", "transport"),  # encode_item, the text codecs
    ("mmbench/world/vllm_item.py", "*", "transport"),  # --codec vllm: vLLM's msgpack items
    ("mmbench/world/wire.py", "*", "transport"),
    ("mmbench/world/client.py", "post_generate", "engine_client"),  # httpx: request and reply buffers
    ("mmbench/world/client.py", "*", "transport"),  # build_body: torch.cat, base64, the JSON body
    ("mmbench/world/media.py", "*", "sources"),  # data: URLs and the asset files (raw media)
    ("mmbench/rollout/driver.py", "_ship", "transport"),
    ("mmbench/rollout/driver.py", "_build", "transport"),
    ("mmbench/rollout/driver.py", "_with_pixels", "transport"),
    ("mmbench/rollout/driver.py", "_post", "engine_client"),
    # the event loop's own work (socket reads and writes, callbacks) runs under RolloutDriver.run
    ("mmbench/rollout/driver.py", "run", "engine_client"),
    ("mmbench/rollout/driver.py", "run_async", "engine_client"),
    ("mmbench/rollout/state.py", "of", "other"),  # Totals, the worker's bookkeeping
    ("mmbench/rollout/raw.py", "count_wrong", "other"),  # the check after the measured phase
    ("mmbench/rollout/", "*", "trajectory"),  # tokens, steps, completions
    ("mmbench/world/sidecar.py", "*", "trajectory"),
    ("mmbench/transports/", "stored", "trajectory"),
    ("mmbench/transports/", "*", "transport"),  # plan, the sent-hash LRU
    ("mmbench/world/images.py", "*", "sources"),
)
RENDERER_PATH = "mmbench/world/renderer.py"
# renderer functions whose results the trajectories and the image cache keep (pixel_values, grid)
RENDERER_OUTPUT = ("preprocess", "to_bfloat16_bits")
# Records with no mmbench frame: memray can lose the outer frames of a coroutine resumed on the main
# thread, keeping only the library frames. The worker's only HTTP client is the engine client.
ENGINE_CLIENT_LIBRARIES = ("httpx", "httpcore", "h11", "anyio")
ATTRIBUTION = (
    "Each allocation is charged to its innermost frame in mmbench's code (the site), each site to a "
    "category by its function. The renderer's output (pixel_values, allocated in world/renderer.py "
    "preprocess) outlives the render: after the rollouts only the trajectories and the image cache hold "
    "it. So preprocess sites still holding bytes at retained time are charged to those holders, split by the "
    "worker's ledger (pixel bytes only the image cache holds go to image cache, the rest to trajectory "
    "storage); the same split is applied to those sites at the high-water mark, where it also covers "
    "the pixels of turns in flight. Renderer bytes alive only at the peak are preprocessing "
    "temporaries. Allocations with no mmbench frame on their stack (memray can lose a coroutine's outer "
    "frames) are charged to engine client buffers when under httpx, httpcore, h11 or anyio, else to "
    "outside mmbench. Small Python objects live in pymalloc arenas, each charged to the call that opened it."
)

Frame = tuple[str, str, int]  # (function, file, line), as memray gives them
SiteKey = tuple[str, str, int]  # (path under the package's parent, function, line)
_ROOT = Path(__file__).resolve().parents[1]  # the package: sites are named from its parent


@dataclass(frozen=True, slots=True)
class Site:
    function: str
    path: str  # e.g. mmbench/world/renderer.py
    line: int
    bytes: int
    allocations: int
    share: float  # of the snapshot's total
    category: str  # the category that holds most of its bytes
    split: tuple[tuple[str, int], ...] = ()  # bytes per category, for a site charged to several

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "function": self.function, "path": self.path, "line": self.line, "bytes": self.bytes,
            "allocations": self.allocations, "share": self.share, "category": self.category,
        }  # fmt: skip
        if self.split:
            out["split"] = dict(self.split)
        return out


@dataclass(frozen=True, slots=True)
class CategoryTotal:
    key: str
    bytes: int
    share: float

    @property
    def label(self) -> str:
        return CATEGORIES[self.key]


@dataclass(frozen=True, slots=True)
class Snapshot:
    name: str  # high_water_mark or retained
    total_bytes: int
    allocations: int
    site_count: int  # sites with bytes at this snapshot (the table shows the top ones)
    sites: tuple[Site, ...]
    categories: tuple[CategoryTotal, ...]  # every category, in CATEGORIES order
    frameless_bytes: int = 0  # records with no mmbench frame on their stack
    frameless_engine_bytes: int = 0  # ...of which under the HTTP client's libraries (engine_client)

    def category(self, key: str) -> CategoryTotal:
        return next(c for c in self.categories if c.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "total_bytes": self.total_bytes, "allocations": self.allocations,
            "site_count": self.site_count, "sites": [s.to_dict() for s in self.sites],
            "frameless_bytes": self.frameless_bytes, "frameless_engine_bytes": self.frameless_engine_bytes,
            "categories": {
                c.key: {"label": c.label, "bytes": c.bytes, "share": c.share} for c in self.categories
            },
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProfileResult:
    record: PointRecord
    out_dir: Path
    capture: Path
    native: bool
    high_water_mark: Snapshot
    retained: Snapshot
    flamegraphs: dict[str, Path]  # snapshot name -> HTML, for those written
    cache_fraction: float | None  # the ledger's share of retained pixel bytes only the image cache holds
    notes: tuple[str, ...] = field(default=())

    @property
    def snapshots(self) -> tuple[Snapshot, Snapshot]:
        return self.high_water_mark, self.retained

    @property
    def missing(self) -> list[str]:
        return [FLAMEGRAPHS[name][0] for name in FLAMEGRAPHS if name not in self.flamegraphs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "point": self.record.to_dict(),
            "native_traces": self.native,
            "files": {
                "capture": self.capture.name,
                **{f"flamegraph_{name}": path.name for name, path in self.flamegraphs.items()},
            },
            "cache_fraction": self.cache_fraction,
            "attribution": ATTRIBUTION,
            "snapshots": {s.name: s.to_dict() for s in self.snapshots},
            "notes": list(self.notes),
        }


def category_of(path: str, function: str) -> str:
    for rule_path, rule_function, category in CATEGORY_RULES:
        in_module = path.startswith(rule_path) if rule_path.endswith("/") else path == rule_path
        if in_module and rule_function in ("*", function):
            return category
    return "other"


def site_of(stack: Sequence[Frame], root: Path = _ROOT) -> SiteKey | None:
    """The innermost frame of `stack` (innermost first) in a file under the package `root`."""
    prefix = str(root) + os.sep
    for function, filename, line in stack:
        if filename.startswith(prefix):
            return f"{root.name}/{filename[len(prefix) :]}", function, line
    return None


def frameless_category(stack: Sequence[Frame]) -> str:
    """The category of a record with no mmbench frame: engine_client under the HTTP client's
    libraries (the worker's only HTTP client is the engine client), else outside."""
    marks = tuple(f"{os.sep}site-packages{os.sep}{lib}{os.sep}" for lib in ENGINE_CLIENT_LIBRARIES)
    for _, filename, _ in stack:
        if any(m in filename for m in marks):
            return "engine_client"
    return "outside"


@dataclass(slots=True)
class Tally:
    """One snapshot's records summed per site, and per category for those with no mmbench frame."""

    sites: dict[SiteKey, list[int]] = field(default_factory=dict)  # key -> [bytes, allocations]
    frameless: dict[str, list[int]] = field(default_factory=dict)  # category -> [bytes, allocations]

    @classmethod
    def of(cls, records: Iterable[tuple[Sequence[Frame], int, int]], root: Path = _ROOT) -> Tally:
        tally = cls()
        for stack, size, count in records:
            key = site_of(stack, root)
            if key is None:
                slot = tally.frameless.setdefault(frameless_category(stack), [0, 0])
            else:
                slot = tally.sites.setdefault(key, [0, 0])
            slot[0] += size
            slot[1] += count
        return tally

    def _slots(self) -> list[list[int]]:
        return [*self.sites.values(), *self.frameless.values()]

    @property
    def total_bytes(self) -> int:
        return sum(b for b, _ in self._slots())

    @property
    def allocations(self) -> int:
        return sum(n for _, n in self._slots())


def cache_fraction(record: PointRecord) -> float | None:
    """Of the pixel bytes alive at retained time, the share only the image cache holds (the ledger)."""
    held = record.client.accounting
    stored, cache_only = held.stored_pixel_bytes or 0, held.renderer_cache_only_bytes or 0
    return cache_only / (stored + cache_only) if stored + cache_only > 0 else None


def _split(key: SiteKey, size: int, output_sites: set[SiteKey], fraction: float | None) -> dict[str, int]:
    category = category_of(key[0], key[1])
    if key not in output_sites or fraction is None:
        return {category: size}
    cache = round(size * fraction)
    return {k: v for k, v in (("trajectory", size - cache), ("image_cache", cache)) if v}


def snapshot(
    name: str, tally: Tally, output_sites: set[SiteKey], fraction: float | None, top: int = DEFAULT_TOP
) -> Snapshot:
    """Sites ranked by bytes with their category (renderer output charged to its holders), and the
    total per category; the categories sum to the snapshot's total exactly."""
    total = tally.total_bytes
    share = (lambda b: b / total) if total else (lambda b: 0.0)
    per_category = dict.fromkeys(CATEGORIES, 0)
    for category, (size, _) in tally.frameless.items():
        per_category[category] += size
    sites: list[Site] = []
    for key, (size, count) in tally.sites.items():
        parts = _split(key, size, output_sites, fraction)
        for category, part in parts.items():
            per_category[category] += part
        main = max(parts, key=lambda c: parts[c]) if parts else category_of(key[0], key[1])
        split = tuple(sorted(parts.items())) if len(parts) > 1 else ()
        sites.append(Site(key[1], key[0], key[2], size, count, share(size), main, split))
    sites.sort(key=lambda s: (-s.bytes, s.path, s.line, s.function))
    categories = tuple(CategoryTotal(k, b, share(b)) for k, b in per_category.items())
    frameless = {k: b for k, (b, _) in tally.frameless.items()}
    return Snapshot(
        name, total, tally.allocations, len(sites), tuple(sites[:top]), categories,
        sum(frameless.values()), frameless.get("engine_client", 0),
    )  # fmt: skip


def snapshots(
    high_water_mark: Tally, retained: Tally, fraction: float | None, top: int = DEFAULT_TOP
) -> tuple[Snapshot, Snapshot]:
    # Nothing renders after the rollouts, so what the output functions still hold then is output.
    output_sites = {
        k
        for k, (b, _) in retained.sites.items()
        if b > 0 and k[0] == RENDERER_PATH and k[1] in RENDERER_OUTPUT
    }
    return (
        snapshot("high_water_mark", high_water_mark, output_sites, fraction, top),
        snapshot("retained", retained, output_sites, fraction, top),
    )


def read_capture(capture: Path) -> tuple[Tally, Tally]:
    """The capture's high-water mark and what was still allocated when tracking stopped."""
    import memray

    def rows(records: Iterable[Any]) -> Iterable[tuple[Sequence[Frame], int, int]]:
        for r in records:
            yield r.stack_trace(), int(r.size), int(r.n_allocations)

    reader = memray.FileReader(str(capture))
    try:
        return (
            Tally.of(rows(reader.get_high_watermark_allocation_records(merge_threads=True))),
            Tally.of(rows(reader.get_leaked_allocation_records(merge_threads=True))),
        )
    finally:
        reader.close()


class _PythonStackWhenUnpaired:
    """A record whose hybrid stack falls back to its Python stack when memray cannot pair Python and
    native frames (an AssertionError in memray 1.20 on 3.11 for some main-thread asyncio records)."""

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._record, name)

    def hybrid_stack_trace(self, max_stacks: int | None = None) -> Any:
        try:
            return self._record.hybrid_stack_trace(max_stacks)
        except AssertionError:
            return self._record.stack_trace(max_stacks)


_IN_PROCESS = threading.Lock()


def _flamegraph_in_process(capture: Path, out: Path, leaks: bool) -> None:
    import memray
    from memray.reporters.flamegraph import FlameGraphReporter

    reader = memray.FileReader(str(capture))
    try:
        records = (
            reader.get_leaked_allocation_records(merge_threads=True)
            if leaks
            else reader.get_high_watermark_allocation_records(merge_threads=True)
        )
        reporter = FlameGraphReporter.from_snapshot(
            [_PythonStackWhenUnpaired(r) for r in records],  # type: ignore[misc]
            memory_records=tuple(reader.get_memory_snapshots()),
            native_traces=reader.metadata.has_native_traces,
            merge_threads=True,
            inverted=False,
        )
        with open(out, "w") as f:
            reporter.render(
                outfile=f,
                metadata=reader.metadata,
                show_memory_leaks=leaks,
                merge_threads=True,
                inverted=False,
            )
    finally:
        reader.close()


def flamegraph(capture: Path, out: Path, options: Sequence[str], native: bool) -> tuple[bool, str | None]:
    """memray's flame graph reporter on the capture: (written, a note on what went wrong)."""
    cmd = [sys.executable, "-m", "memray", "flamegraph", "--force", *options, "-o", str(out), str(capture)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=FLAMEGRAPH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return False, f"{out.name}: memray flamegraph timed out after {FLAMEGRAPH_TIMEOUT_S:.0f} s"
    if done.returncode == 0 and out.exists():
        return True, None
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    if not native:
        return False, f"{out.name}: memray flamegraph failed: {tail}"
    try:
        with _IN_PROCESS:  # one reader at a time: memray's reader is not known to be thread-safe
            _flamegraph_in_process(capture, out, leaks="--leaks" in options)
    except Exception as exc:  # memray internals: report, keep the table
        return False, f"{out.name}: memray flamegraph failed ({tail}), and so did the fallback: {exc!r}"
    return True, (
        f"{out.name}: memray's reporter could not pair Python and native frames ({tail}); written "
        "in-process with the Python stack for the records it could not pair"
    )


def _heap_note(record: PointRecord) -> str | None:
    heap, rss = record.client.memray_peak_bytes, record.client.rss.peak_bytes
    if heap is None or rss is None or heap <= rss:
        return None
    why = (
        " (orjson.dumps reserves many times the body it writes; codec stdlib does not)"
        if record.config.codec == "fast"
        else ""
    )
    return (
        f"memray's heap high-water mark ({fmt_bytes(heap)}) is above the worker's peak RSS "
        f"({fmt_bytes(rss)}): memray counts the bytes each allocation asks for, and memory "
        f"reserved but never written is not resident{why}"
    )


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MmbenchError(f"--out {out_dir}: exists and is not an empty directory; choose another")


def profile_point(
    config: PointConfig,
    out_dir: Path,
    native: bool = False,
    top: int = DEFAULT_TOP,
    force: bool = False,
    max_memory: int | None = None,
    engine: EngineChoice | None = None,
) -> ProfileResult:
    """Measure `config` with memray tracking the worker; write the capture, the flame graphs and
    sites.json into `out_dir` (created; it must not hold anything yet)."""
    if top < 1:
        raise MmbenchError(f"--top must be >= 1, got {top}")
    check_out_dir(out_dir)
    try:
        import memray  # noqa: F401
    except ImportError:
        raise MmbenchError("memray is not installed; pip install memray") from None
    served_by = engine or Embedded()
    served_by.check([config])  # before it runs (the harness does not check)
    options = HarnessOptions(
        memray_dir=out_dir, memray_native=native, force=force, max_memory=max_memory, engine=served_by
    )
    record = measure_point(config, 0, options)
    if record.status == "skipped":
        raise MmbenchError(f"{record.cause}; use a smaller point, or --force to run it anyway")
    captures = sorted(out_dir.glob("*.bin"))
    if not record.ok:
        where = f"; the partial capture is in {out_dir}" if captures else ""
        raise MmbenchError(f"point failed: {record.cause}{where}", exit_code=1)
    if len(captures) != 1:
        raise MmbenchError(f"expected one memray capture in {out_dir}, found {len(captures)}", exit_code=1)
    capture = captures[0]
    fraction = cache_fraction(record)
    high, retained = snapshots(*read_capture(capture), fraction, top)
    notes: list[str] = []
    heap = _heap_note(record)
    if heap:
        notes.append(heap)
    written: dict[str, Path] = {}
    # The two reporters side by side: each is a process of its own (memray's command), 2-4 s apiece.
    with ThreadPoolExecutor(max_workers=len(FLAMEGRAPHS)) as pool:
        done = {
            name: pool.submit(flamegraph, capture, out_dir / filename, flags, native)
            for name, (filename, flags) in FLAMEGRAPHS.items()
        }
    for name, (filename, _) in FLAMEGRAPHS.items():
        ok, problem = done[name].result()
        if problem:
            notes.append(problem)
        if ok:
            written[name] = out_dir / filename
    result = ProfileResult(
        record, out_dir, capture, native, high, retained, written, fraction, tuple(notes)
    )  # fmt: skip
    atomic_write(out_dir / SITES_JSON, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result
