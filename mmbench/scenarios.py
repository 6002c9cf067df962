"""Scenario files: versioned TOML grids of points, validated whole before anything runs.

    version = 1
    description = "what this scenario shows"
    repeats = 1                       # optional
    extrapolate = false               # optional: estimate points preflight refuses from a fit
    mode = ["full", "ephemeral"]      # any point parameter: a value or a list of values
    rollouts = [1, 2, 4, 8]
    image_size = 512

A list makes an axis of the grid; points run grouped by mode, with rollouts innermost.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.config import PointConfig, coerce, field_names
from mmbench.errors import MmbenchError

SCENARIO_VERSION = 1
META_KEYS = ("version", "description", "repeats", "extrapolate")
MAX_POINTS = 10_000


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ./scenarios, then the one beside the package."""
    here = Path(__file__).resolve().parent.parent / "scenarios"
    dirs = [Path.cwd() / "scenarios"]
    if here not in dirs:
        dirs.append(here)
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    grid: dict[str, list[Any]] = field(default_factory=dict)
    repeats: int = 1
    version: int = SCENARIO_VERSION
    path: str | None = None
    # Points preflight refuses are estimated from a fit over the measured K instead of skipped.
    extrapolate: bool = False

    def points(self) -> list[PointConfig]:
        keys = sorted(self.grid, key=_axis_order)
        combos = itertools.product(*(self.grid[k] for k in keys))
        return [PointConfig(**dict(zip(keys, values, strict=True))) for values in combos]

    def with_overrides(self, overrides: dict[str, list[Any]], repeats: int | None = None) -> Scenario:
        grid = {**self.grid, **{k: _values(k, v, "override") for k, v in overrides.items()}}
        out = Scenario(
            self.name,
            self.description,
            grid,
            repeats or self.repeats,
            self.version,
            self.path,
            self.extrapolate,
        )
        out.check()
        return out

    def check(self) -> None:
        n = 1
        for values in self.grid.values():
            n *= len(values)
        if n * self.repeats > MAX_POINTS:
            raise MmbenchError(
                f"scenario {self.name}: {n * self.repeats} points is more than {MAX_POINTS}; shrink the grid"
            )
        self.points()  # every point is validated before anything runs

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "repeats": self.repeats,
            "grid": self.grid,
            "path": self.path,
            "extrapolate": self.extrapolate,
        }


def _axis_order(key: str) -> tuple[int, int]:
    names = field_names()
    if key == "mode":
        return (0, 0)
    if key == "rollouts":
        return (2, 0)
    return (1, names.index(key))


def _values(key: str, raw: Any, where: str) -> list[Any]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise MmbenchError(f"{where}: {key} is an empty list; give at least one value")
    out = [coerce(key, v, where) for v in items]
    if len(set(map(str, out))) != len(out):
        raise MmbenchError(f"{where}: {key} lists a value twice")
    return out


def parse_scenario(data: dict[str, Any], name: str, where: str, path: str | None = None) -> Scenario:
    known = [*META_KEYS, *field_names()]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise MmbenchError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
    version = data.get("version")
    if version != SCENARIO_VERSION:
        raise MmbenchError(f"{where}: version must be {SCENARIO_VERSION}, got {version!r}")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise MmbenchError(f"{where}: description must be a non-empty string")
    repeats = data.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= 100:
        raise MmbenchError(f"{where}: repeats must be an integer from 1 to 100, got {repeats!r}")
    extrapolate = data.get("extrapolate", False)
    if not isinstance(extrapolate, bool):
        raise MmbenchError(f"{where}: extrapolate must be true or false, got {extrapolate!r}")
    grid = {k: _values(k, v, where) for k, v in data.items() if k not in META_KEYS}
    scenario = Scenario(name, description.strip(), grid, repeats, version, path, extrapolate)
    try:
        scenario.check()
    except MmbenchError as exc:
        raise MmbenchError(f"{where}: {exc}") from None
    return scenario


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise MmbenchError(f"scenario file {name_or_path} does not exist; `mmbench scenarios` lists them")
        return p
    for d in scenario_dirs():
        candidate = d / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    names = ", ".join(n for n, _, _ in list_scenarios()) or "none found"
    raise MmbenchError(f"unknown scenario {name_or_path!r}; known: {names}")


def load_scenario(name_or_path: str) -> Scenario:
    path = resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MmbenchError(f"{path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MmbenchError(f"{path}: cannot read ({exc})") from None
    return parse_scenario(data, path.stem, str(path), str(path))


def list_scenarios() -> list[tuple[str, str, Path]]:
    seen: dict[str, tuple[str, str, Path]] = {}
    for d in scenario_dirs():
        for path in sorted(d.glob("*.toml")):
            if path.stem in seen:
                continue
            try:
                desc = load_scenario(str(path)).description
            except MmbenchError as exc:
                desc = f"(invalid: {exc})"
            seen[path.stem] = (path.stem, desc, path)
    return sorted(seen.values())
