"""The fleet model against what was measured: every fleet point of the results given, re-predicted
with today's model (mmbench.measure.model.fleet) beside its measured counts.

    .venv/bin/python benchmarks/fleet_model.py RESULTS [RESULTS ...] [--all]

Prints a markdown table (R, mode, policy, session header, router retries, kill turn, status, then
each count as `measured (predicted)`: fallbacks, replica misses, router retries, failed rollouts;
the bytes resent and retried, the duplication and the balance),
and a summary: per count, the points within max(3, 25 %) of the prediction. `--all` keeps the points
where nothing can go wrong (every count 0 measured and predicted). Not a test: how docs/fleet.md's
tables are made, and the check to run after changing the model.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from mmbench.measure.model import predict
from mmbench.record import PointRecord
from mmbench.results import load
from mmbench.units import fmt_bytes

Count = Callable[[PointRecord], int | None]
MEASURED: dict[str, Count] = {
    "fallbacks": lambda r: r.traffic.fallbacks,
    "misses": lambda r: r.engine.fleet.misses,
    "router retries": lambda r: r.engine.router.retries,
    "failed rollouts": lambda r: r.traffic.failed_rollouts,
}


def predicted(r: PointRecord) -> dict[str, int | None]:
    p = predict(r.config, r.prediction.source_bytes_per_image or 0.0, engine=r.engine.kind or "embedded")
    return {"fallbacks": p.fallbacks, "misses": p.fleet_misses, "router retries": p.router_retries,
            "failed rollouts": getattr(p, "failed_rollouts", None)}  # fmt: skip


def _retried(value: int | None) -> str:
    """Unknown where negative (results written before mmbench.measure.fleet.sections said so)."""
    return fmt_bytes(value) if value is not None and value >= 0 else "-"


def close(measured: int | None, model: int | None) -> bool:
    if measured is None or model is None:
        return False
    return abs(measured - model) <= max(3, 0.25 * max(measured, model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--all", action="store_true", help="also the points where every count is 0")
    args = parser.parse_args()
    counts = [f"{n} (pred.)" for n in MEASURED]
    header = ["R", "mode", "policy", "session", "retries", "kill", "status", *counts,
              "resent", "retried bytes", "duplication", "balance"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    within = dict.fromkeys(MEASURED, 0)
    shown = 0
    for path in args.results:
        for r in load(path).points:
            c = r.config
            if not c.replicas:
                continue
            model = predicted(r)
            got = {name: read(r) for name, read in MEASURED.items()}
            if not args.all and not any(got.values()) and not any(model.values()):
                continue
            shown += 1
            for name in MEASURED:
                within[name] += close(got[name], model[name])
            status = r.status if r.ok else f"{r.status}: {(r.cause or '')[:200]}"
            cells = [f"{got[n] if got[n] is not None else '-'} ({model[n] if model[n] is not None else '-'})"
                     for n in MEASURED]  # fmt: skip
            fleet = r.engine.fleet
            print("| " + " | ".join([
                str(c.replicas), c.mode, c.router_policy, c.session_header, c.router_retries,
                str(c.kill_replica_at_turn or "-"), status, *cells, fmt_bytes(r.traffic.extra_bytes_shipped),
                _retried(r.engine.router.retried_bytes),
                f"{fleet.duplication:.2f}" if fleet.duplication is not None else "-",
                f"{fleet.balance:.2f}" if fleet.balance is not None else "-",
            ]) + " |")  # fmt: skip
    print()
    print(f"{shown} points; within max(3, 25 %) of the model: "
          + ", ".join(f"{name} {n}/{shown}" for name, n in within.items()))  # fmt: skip


if __name__ == "__main__":
    main()
