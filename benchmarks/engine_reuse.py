"""Fresh against reused engines: the same points, figure by figure, with each difference over its bound.

    .venv/bin/python benchmarks/engine_reuse.py FRESH REUSED [--noise OTHER_FRESH] [--bound 10]

FRESH and REUSED are results directories of the same sweep run with `--fresh-engine` and without
(vLLM started once per engine configuration, warmed for each mode, reset between points). Client
figures (retained live, peak, bytes shipped) are held to their run-to-run noise: the largest
relative spread of that figure between FRESH and another run of the same points (`--noise`, e.g. an
earlier fresh run; without it, 2 % for retained, 20 % for the peak, a single reading, and 0 for
bytes; each with a floor: 2 MiB of RSS, 64 KiB of bytes, where raw-file's paths differ). Engine
figures (end and peak above the point's baseline, for the tree and per process kind; vLLM's cache
queries and hits) are held to `--bound` percent, with an 8 MiB floor under which RSS readings move
by a page or two. Prints a markdown table and the list of figures over their bound. Not a test: the
validation that issue 29 asks for, run on a quiet machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mmbench.record import PointRecord
from mmbench.results import load

MIB = 1 << 20
# under these, a difference is a page or two of RSS (engine: several processes), or a path's length
FLOORS = {"client live MiB": 2 * MIB, "client peak MiB": 2 * MIB, "shipped MB": 64 * 1024}
ENGINE_FLOOR = 8 * MIB
KINDS = ("engine_core", "worker", "api_server")
Figure = Callable[[PointRecord], float | None]


def _above(value: int | None, base: int | None) -> float | None:
    return None if value is None or base is None else float(value - base)


def _kind(kind: str, attr: str) -> Figure:
    def read(r: PointRecord) -> float | None:
        p = (r.engine.figures.processes or {}).get(kind)
        return None if p is None else _above(getattr(p, attr), p.baseline_rss_bytes)

    return read


CLIENT: dict[str, Figure] = {
    "client live MiB": lambda r: r.client.retained_live_bytes,
    "client peak MiB": lambda r: r.client.peak_bytes,
    "shipped MB": lambda r: r.traffic.bytes_shipped,
}
ENGINE: dict[str, Figure] = {
    "engine end MiB": lambda r: _above(r.engine.figures.rss_bytes, r.engine.figures.rss_baseline_bytes),
    "engine peak MiB": lambda r: _above(r.engine.figures.peak_rss_bytes, r.engine.figures.rss_baseline_bytes),
    **{f"{k} peak MiB": _kind(k, "peak_rss_bytes") for k in KINDS},
    **{f"{k} end MiB": _kind(k, "rss_bytes") for k in KINDS},
    "queries": lambda r: r.engine.figures.mm_cache_queries,
    "hits": lambda r: r.engine.figures.cache_hits,
}
DEFAULT_NOISE = {"client live MiB": 0.02, "client peak MiB": 0.20, "shipped MB": 0.0}


def _points(path: Path) -> dict[tuple[str, int], PointRecord]:
    return {(r.config.mode, r.config.rollouts): r for r in load(path).points if r.ok}


def _scale(name: str) -> float:
    return 1e6 if name.endswith("MB") else MIB if name.endswith("MiB") else 1.0


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1.0)


def noise(
    fresh: dict[tuple[str, int], PointRecord], other: dict[tuple[str, int], PointRecord]
) -> dict[str, float]:
    """The largest relative spread of each client figure between two runs of the same points."""
    spread = dict.fromkeys(CLIENT, 0.0)
    for key in fresh.keys() & other.keys():
        for name, read in CLIENT.items():
            a, b = read(fresh[key]), read(other[key])
            if a is not None and b is not None:
                spread[name] = max(spread[name], _rel(a, b))
    return spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fresh", type=Path)
    ap.add_argument("reused", type=Path)
    ap.add_argument("--noise", type=Path, help="another run of the same points on fresh engines")
    ap.add_argument("--bound", type=float, default=10.0, help="engine figures: percent")
    args = ap.parse_args()
    fresh, reused = _points(args.fresh), _points(args.reused)
    bounds = noise(fresh, _points(args.noise)) if args.noise else dict(DEFAULT_NOISE)
    bounds.update(dict.fromkeys(ENGINE, args.bound / 100))
    figures = {**CLIENT, **ENGINE}
    print("| mode | K | reused | " + " | ".join(f"{n} f/r" for n in figures) + " |")
    print("|" + "---|" * (3 + len(figures)))
    over: list[str] = []
    for key in [k for k in fresh if k in reused]:
        f, r = fresh[key], reused[key]
        cells = []
        for name, read in figures.items():
            a, b = read(f), read(r)
            if a is None or b is None:
                cells.append("-")
                continue
            scale = _scale(name)
            floor = FLOORS.get(name, ENGINE_FLOOR if name.endswith("MiB") else 0)
            bad = abs(a - b) > floor and _rel(a, b) > bounds[name] + 1e-9
            digits = 1 if scale != 1.0 else 0
            cell = f"{a / scale:.{digits}f} / {b / scale:.{digits}f}"
            cells.append(f"**{cell}**" if bad else cell)
            if bad:
                over.append(f"{key[0]} K={key[1]}: {name} {cell} ({_rel(a, b):.0%} > {bounds[name]:.0%})")
        print(f"| {key[0]} | {key[1]} | {r.engine.reused} | " + " | ".join(cells) + " |")
    print()
    print(
        "bounds: "
        + ", ".join(f"{n} {b:.0%}" for n, b in bounds.items() if n in CLIENT)
        + f"; engine figures {args.bound:.0f} % (8 MiB floor)"
    )
    print(f"{len(over)} figure(s) over their bound" + (":" if over else ""))
    for line in over:
        print(f"- {line}")


if __name__ == "__main__":
    main()
