"""Results: one frozen record per measured point, and the one boundary to JSON and CSV.

A results directory holds `results.json` (schema_version, environment, scenario, points),
`results.csv` (one row per point) and `points.jsonl` (an append-only log, one line per finished
point, from which the other two are rebuilt). Each point is a `PointRecord` (mmbench.record), nested
by what its figures describe; the CSV (and `mmbench.api`'s DataFrame) flatten it to dotted columns.
Files are written atomically and deterministically, so that they diff well and a crash loses at
most the point in flight. Older files migrate on load (mmbench.migrations).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench.errors import MmbenchError
from mmbench.migrations import migrate, v5_point
from mmbench.record import COLUMNS, PointRecord, sorted_keys

SCHEMA_VERSION = 6
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
POINTS_LOG = "points.jsonl"
CSV_COLUMNS = COLUMNS


@dataclass(frozen=True, slots=True)
class ResultsFile:
    environment: dict[str, Any]
    scenario: dict[str, Any]
    points: list[PointRecord]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "environment": sorted_keys(self.environment),
            "scenario": sorted_keys(self.scenario),
            "points": [p.to_dict() for p in self.points],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ResultsFile:
        if not isinstance(data, dict) or "schema_version" not in data:
            raise MmbenchError(f"{where}: not an mmbench results file (no schema_version)")
        data = migrate(data)
        version = data["schema_version"]
        if type(version) is not int or version != SCHEMA_VERSION:
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            hint = "upgrade mmbench to read it" if newer else "re-run the sweep with this mmbench"
            raise MmbenchError(
                f"{where}: schema_version {version!r} is not supported "
                f"(this mmbench reads {SCHEMA_VERSION}); {hint}"
            )
        points = data.get("points")
        if not isinstance(points, list):
            raise MmbenchError(f"{where}: 'points' must be a list")
        env, scenario = data.get("environment", {}), data.get("scenario", {})
        if not isinstance(env, dict) or not isinstance(scenario, dict):
            raise MmbenchError(f"{where}: 'environment' and 'scenario' must be objects")
        recs = [PointRecord.from_dict(p, f"{where}: point {i}") for i, p in enumerate(points)]
        return cls(env, scenario, recs, version)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json(results: ResultsFile) -> str:
    """Deterministic: the sections in the record's order (a point reads top-down), every free-form
    dict's keys sorted."""
    return json.dumps(results.to_dict(), indent=2) + "\n"


def csv_cell(value: Any) -> Any:
    """A flat column's value as one CSV cell: a list as `a;b;c`, a dict as JSON."""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def to_csv(points: list[PointRecord]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in points:
        writer.writerow({k: csv_cell(v) for k, v in p.flat().items()})
    return buf.getvalue()


def save(directory: Path, results: ResultsFile) -> None:
    """Write results.json and results.csv, each atomically."""
    atomic_write(directory / RESULTS_JSON, to_json(results))
    atomic_write(directory / RESULTS_CSV, to_csv(results.points))


def append_point(directory: Path, record: PointRecord) -> None:
    """Append one finished point to the log, durably, before anything else is written."""
    directory.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(directory / POINTS_LOG)
    with open(directory / POINTS_LOG, "a") as f:
        f.write(json.dumps(record.to_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """A crash mid-append leaves a last line without its newline: that point was lost, cut it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def read_points_log(directory: Path) -> list[PointRecord]:
    """Finished points from the log; a torn last line (a crash mid-write) is ignored."""
    path = directory / POINTS_LOG
    if not path.exists():
        return []
    records: list[PointRecord] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise MmbenchError(f"{path}: line {i + 1} is not JSON; the log is damaged") from None
        if isinstance(data, dict) and "config" not in data and "mode" in data:
            data = v5_point(data)  # a log a v5 mmbench began: its points resume as v6 ones
        records.append(PointRecord.from_dict(data, f"{path}: line {i + 1}"))
    return records


def load(path: str | Path) -> ResultsFile:
    """Read a results directory (or its results.json); any problem is one MmbenchError line."""
    p = Path(path)
    file = p / RESULTS_JSON if p.is_dir() else p
    if not file.exists():
        raise MmbenchError(f"{path}: no results here (expected a results directory or a results.json)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MmbenchError(
            f"{file}: not valid JSON ({exc.__class__.__name__} at {getattr(exc, 'pos', '?')})"
        ) from None
    except OSError as exc:
        raise MmbenchError(f"{file}: cannot read ({exc.strerror})") from None
    return ResultsFile.from_dict(data, str(file))
