"""Extrapolation: points preflight would not run, estimated from a fit over the measured K.

Only where a scenario asks for it (`extrapolate = true`). The fit is the same least squares the
reports use, over the K at which the renderer caches are already full, so that it measures the
marginal cost of one more rollout; every extrapolated record says so in its status and cause.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from mmbench.analysis.fits import Fit, cache_full_k, fit_line, group
from mmbench.measure.machines import machines_differ, roomiest, split_key
from mmbench.results import PointRecord

# The figures an extrapolated record carries, by their dotted paths.
EXTRAPOLATED_FIELDS = (
    "client.retained_bytes", "client.retained_live_bytes", "client.allocator_retention_bytes",
    "client.peak_bytes", "traffic.bytes_shipped", "client.accounting.stored_pixel_bytes",
    "client.accounting.source_bytes", "client.accounting.descriptor_bytes", "client.accounting.other_bytes",
    "client.accounting.live_data_bytes", "client.accounting.renderer_cache_only_bytes", "traffic.requests",
    "traffic.full_items_sent", "traffic.null_items_sent",
)  # fmt: skip
LIVE = "client.retained_live_bytes"
T = TypeVar("T")


def _with(section: T, path: str, value: Any) -> T:
    """The (frozen) section with the figure at the dotted path replaced."""
    name, _, rest = path.partition(".")
    return replace(section, **{name: _with(getattr(section, name), rest, value) if rest else value})  # type: ignore[type-var]


def _family(record: PointRecord) -> tuple[object, ...]:
    """Every parameter but K and the repeat."""
    d = record.config.to_dict()
    d.pop("rollouts")
    return tuple(sorted(d.items()))


def extrapolate(records: list[PointRecord]) -> list[PointRecord]:
    """The records with every `skipped` one replaced by an `extrapolated` one where a fit exists."""
    # Keyed by family and, where measured records come from different machines, by machine.
    measured = [r for r in records if r.ok]
    split = machines_differ(measured)
    Key = tuple[tuple[object, ...], str | None]
    fits: dict[Key, tuple[dict[str, Fit], list[int]]] = {}
    families: dict[Key, list[PointRecord]] = {}
    for r in measured:
        families.setdefault((_family(r), split_key(r, split)), []).append(r)
    for fam, recs in families.items():
        groups = group(recs)
        past = [g for g in groups if g.config.rollouts >= cache_full_k(g.config)]
        if len({g.config.rollouts for g in past}) < 2:
            continue
        ks = sorted({g.config.rollouts for g in past})
        per_field: dict[str, Fit] = {}
        for name in EXTRAPOLATED_FIELDS:
            pts = [(float(g.config.rollouts), g.stat(name)) for g in past]
            usable = [(x, s.median) for x, s in pts if s is not None]
            fit = fit_line([x for x, _ in usable], [y for _, y in usable])
            if fit is not None:
                per_field[name] = fit
        fits[fam] = (per_field, ks)
    out: list[PointRecord] = []
    for r in records:
        machine = split_key(r, split)
        if split and (_family(r), machine) not in fits:
            # Not measured on its own machine (a point no worker could hold has none): the fit of
            # the machine with the most memory, the one that came closest to running it.
            machine = roomiest(measured, [m for f, m in fits if f == _family(r)])
        found = fits.get((_family(r), machine)) if r.status == "skipped" else None
        if found is None:
            out.append(r)
            continue
        per_field, ks = found
        k = float(r.config.rollouts)
        values: dict[str, Any] = {name: round(fit.at(k)) for name, fit in per_field.items()}
        live = per_field.get(LIVE)
        how = f"extrapolated from K={','.join(map(str, ks))}" + (f" on {machine}" if machine else "")
        how += f" (R²={live.r2:.4f})" if live else ""
        predicted = r.prediction.retained_bytes
        values["prediction.retained_ratio"] = (
            values[LIVE] / predicted if LIVE in values and predicted else None
        )
        new = replace(r, status="extrapolated", cause=f"{r.cause}; {how}" if r.cause else how)
        for path, value in values.items():
            new = _with(new, path, value)
        out.append(new)
    return out
