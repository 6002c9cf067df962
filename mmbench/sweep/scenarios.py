"""Scenario files: versioned TOML grids of points, validated whole before anything runs.

    version = 1
    description = "what this scenario shows"
    repeats = 1                       # optional
    extrapolate = false               # optional: estimate points preflight refuses from a fit
    engine = "vllm"                   # optional: the engine started per point (default embedded)
    mode = ["full", "ephemeral"]      # any point parameter: a value or a list of values
    rollouts = [1, 2, 4, 8]
    image_size = 512

A list makes an axis of the grid; points run grouped by mode, with rollouts innermost.

A grid is a cartesian product, so it cannot say "one parameter at a time". For that, a scenario
may add variants: an array of tables, each a set of overrides applied on top of the grid above
(values or lists, validated like the grid's keys), with an optional `name`:

    [[variant]]
    name = "baseline"                 # no overrides: the grid itself
    [[variant]]
    name = "bf16"
    dtype = "bfloat16"

With variants, the points are each variant's grid in file order (a point that an earlier variant
already plans is not repeated); without them, the grid alone. Flags given on the command line
override a key in the grid and in every variant.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.config import PointConfig, coerce, field_names
from mmbench.errors import MmbenchError
from mmbench.measure.engines import ENGINES

SCENARIO_VERSION = 1
META_KEYS = ("version", "description", "repeats", "extrapolate", "variant", "engine")
MAX_POINTS = 10_000
MAX_VARIANTS = 100


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ./scenarios, then the one beside the package."""
    here = Path(__file__).resolve().parents[2] / "scenarios"
    dirs = [Path.cwd() / "scenarios"]
    if here not in dirs:
        dirs.append(here)
    return [d for d in dirs if d.is_dir()]


@dataclass(frozen=True, slots=True)
class Variant:
    """Overrides applied on top of a scenario's grid (one [[variant]] table)."""

    name: str
    overrides: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.overrides}


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
    # One-knob-at-a-time overrides on top of the grid; empty: the grid alone.
    variants: tuple[Variant, ...] = ()
    # The engine started for each point (embedded, vllm); None: not said (embedded, or --engine).
    engine: str | None = None

    def points(self) -> list[PointConfig]:
        return [config for _, config in self.labelled_points()]

    def labelled_points(self) -> list[tuple[str | None, PointConfig]]:
        """Every point with the name of the variant that plans it first (None without variants),
        in run order: variants in file order, each one's grid grouped by mode, rollouts innermost."""
        if not self.variants:
            return [(None, config) for config in _grid_points(self.grid)]
        out: list[tuple[str | None, PointConfig]] = []
        seen: set[PointConfig] = set()
        for variant in self.variants:
            for config in _grid_points({**self.grid, **variant.overrides}):
                if config not in seen:
                    seen.add(config)
                    out.append((variant.name, config))
        return out

    def sets(self, key: str) -> bool:
        """Whether the grid or a variant gives this point parameter."""
        return key in self.grid or any(key in v.overrides for v in self.variants)

    def unset(self, defaults: Mapping[str, Any]) -> dict[str, list[Any]]:
        """`defaults` (an engine's, for its points) as overrides of the parameters this scenario does
        not set itself: a scenario that gives the codec keeps it on vLLM."""
        return {k: [v] for k, v in defaults.items() if not self.sets(k)}

    def with_overrides(self, overrides: dict[str, list[Any]], repeats: int | None = None) -> Scenario:
        values = {k: _values(k, v, "override") for k, v in overrides.items()}
        grid = {**self.grid, **values}
        # A flag overrides its key everywhere: in the grid and in every variant.
        variants = tuple(
            Variant(v.name, {k: x for k, x in v.overrides.items() if k not in values}) for v in self.variants
        )
        out = Scenario(
            self.name,
            self.description,
            grid,
            repeats or self.repeats,
            self.version,
            self.path,
            self.extrapolate,
            variants,
            self.engine,
        )
        out.check()
        return out

    def check(self) -> None:
        grids = [{**self.grid, **v.overrides} for v in self.variants] or [self.grid]
        n = sum(_grid_size(g) for g in grids)
        if n * self.repeats > MAX_POINTS:
            raise MmbenchError(
                f"scenario {self.name}: {n * self.repeats} points is more than {MAX_POINTS}; shrink the grid"
            )
        self.points()  # every point is validated before anything runs

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "repeats": self.repeats,
            "grid": self.grid,
            "path": self.path,
            "extrapolate": self.extrapolate,
        }
        if self.variants:
            out["variants"] = [v.to_dict() for v in self.variants]
        if self.engine is not None:
            out["engine"] = self.engine
        return out


def _grid_points(grid: dict[str, list[Any]]) -> list[PointConfig]:
    keys = sorted(grid, key=_axis_order)
    combos = itertools.product(*(grid[k] for k in keys))
    return [PointConfig(**dict(zip(keys, values, strict=True))) for values in combos]


def _grid_size(grid: dict[str, list[Any]]) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


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
    engine = data.get("engine")
    if engine is not None and engine not in ENGINES:
        raise MmbenchError(f"{where}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    grid = {k: _values(k, v, where) for k, v in data.items() if k not in META_KEYS}
    variants = _variants(data.get("variant"), grid, where)
    scenario = Scenario(
        name, description.strip(), grid, repeats, version, path, extrapolate, variants, engine
    )
    try:
        scenario.check()
    except MmbenchError as exc:
        raise MmbenchError(f"{where}: {exc}") from None
    return scenario


def _variants(raw: Any, grid: dict[str, list[Any]], where: str) -> tuple[Variant, ...]:
    """The [[variant]] tables: each a name (optional) and point keys overriding the grid."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(v, dict) for v in raw):
        raise MmbenchError(f"{where}: variant must be an array of tables ([[variant]]), each of point keys")
    if len(raw) > MAX_VARIANTS:
        raise MmbenchError(f"{where}: {len(raw)} variants is more than {MAX_VARIANTS}")
    known = field_names()
    out: list[Variant] = []
    seen: set[PointConfig] = set()
    for i, table in enumerate(raw, start=1):
        name = table.get("name", f"variant {i}")
        if not isinstance(name, str) or not name.strip():
            raise MmbenchError(f"{where}: variant {i}: name must be a non-empty string, got {name!r}")
        name = name.strip()
        here = f"{where}: variant {name!r}"
        if any(v.name == name for v in out):
            raise MmbenchError(f"{here}: the name is used twice; give each variant its own")
        unknown = sorted(set(table) - {"name", *known})
        if unknown:
            raise MmbenchError(f"{here}: unknown key {unknown[0]!r}; known keys: name, {', '.join(known)}")
        variant = Variant(name, {k: _values(k, v, here) for k, v in table.items() if k != "name"})
        size = _grid_size({**grid, **variant.overrides})
        if size > MAX_POINTS:
            raise MmbenchError(f"{here}: {size} points is more than {MAX_POINTS}; shrink the grid")
        try:
            points = _grid_points({**grid, **variant.overrides})
        except MmbenchError as exc:
            raise MmbenchError(f"{here}: {exc}") from None
        if seen.issuperset(points):
            raise MmbenchError(f"{here}: adds no point that an earlier variant does not already plan")
        seen.update(points)
        out.append(variant)
    return tuple(out)


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
