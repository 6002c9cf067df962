"""A sweep's fleet points, one row each: what the router's policy did to the mode, measured beside
the model (mmbench sweep prints it as a table, mmbench report as a table or markdown)."""

from __future__ import annotations

from rich.table import Table

from mmbench.record import PointRecord
from mmbench.units import fmt_bytes

HEADER = (
    "R", "mode", "policy", "session", "retries", "kill", "status", "fallbacks (pred.)", "resent",
    "misses (pred.)", "router retries (pred.)", "failed rollouts (pred.)", "duplication", "balance", "died",
)  # fmt: skip
CAPTION = (
    "R: replicas; session: X-Session-ID = the rollout's id; retries: the router's retries and circuit "
    "breaker (on: as shipped); kill: the turn replica 1 was killed at; fallbacks: the client's resends "
    "in full (resent: their bytes and any retries'); misses: the replicas' cache misses (null slots a "
    "replica lacked, every attempt; raw: images preprocessed); failed rollouts: those that gave up (a dead "
    "replica, every circuit open); duplication: the replicas' cache bytes "
    "/ the distinct items'; balance: max/min requests per replica; (pred.): the model's."
)


def _n(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def fleet_rows(records: list[PointRecord]) -> list[list[str]]:
    rows = []
    for r in records:
        c, t, e, p = r.config, r.traffic, r.engine, r.prediction
        if not c.replicas:
            continue
        status = r.status if r.ok else f"{r.status}: {(r.cause or '')[:160]}"
        rows.append([
            str(c.replicas), c.mode, c.router_policy, c.session_header, c.router_retries,
            str(c.kill_replica_at_turn or "-"), status, f"{_n(t.fallbacks)} ({_n(p.fallbacks)})",
            fmt_bytes(t.extra_bytes_shipped), f"{_n(e.fleet.misses)} ({_n(p.fleet_misses)})",
            f"{_n(e.router.retries)} ({_n(p.router_retries)})",
            f"{_n(t.failed_rollouts)} ({_n(p.failed_rollouts)})", _n(e.fleet.duplication),
            _n(e.fleet.balance), _n(e.fleet.died),
        ])  # fmt: skip
    return rows


def fleet_table(records: list[PointRecord], title: str = "the fleet") -> Table | None:
    rows = fleet_rows(records)
    if not rows:
        return None
    table = Table(title=title, header_style="bold", caption=CAPTION, caption_justify="left", highlight=False)
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("mode", "policy", "status") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def fleet_markdown(records: list[PointRecord]) -> str:
    rows = fleet_rows(records)
    if not rows:
        return ""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*lines, "", CAPTION]) + "\n"
