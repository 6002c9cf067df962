"""Units in one place: bytes to text and text to bytes."""

from __future__ import annotations

import re

from mmbench.errors import MmbenchError

KIB = 1024
MIB = 1024**2
GIB = 1024**3
# How far apart two trimmed RSS readings of the same data can land (allocator and page-cache noise):
# a retained figure, or a growth over K, below it is not a measurement of the data.
RSS_NOISE_FLOOR_BYTES = 2 * MIB

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])i?)?b?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024**4}


def fmt_bytes(n: float | None, precision: int = 1) -> str:
    """24_000_000 -> '22.9 MiB' (binary units, as RSS is read in pages)."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    value = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(value)} B"
            return f"{sign}{value:.{precision}f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_in(n: float | None, unit: str = "MiB", precision: int = 1) -> str:
    """A number in a fixed unit, for table columns whose header names the unit."""
    if n is None:
        return "-"
    return f"{n / {'KiB': KIB, 'MiB': MIB, 'GiB': GIB}[unit]:,.{precision}f}"


def gib(n: float) -> float:
    return n / GIB


def parse_size(text: str, what: str = "size") -> int:
    """'24GiB', '512M', '1.5g', '1048576' -> bytes (binary multiples)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise MmbenchError(f"{what}: cannot read {text!r} as a size; use e.g. 512MiB, 8GiB or bytes")
    number, unit = m.groups()
    return int(float(number) * _FACTORS[(unit or "").lower()])
