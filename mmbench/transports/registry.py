"""The registry of transport modes: CLI choices and --help come from here.

Adding a mode is adding one module with a Transport subclass and one line below.
"""

from __future__ import annotations

from mmbench.errors import MmbenchError
from mmbench.transports.base import Transport
from mmbench.transports.ephemeral import EphemeralTransport
from mmbench.transports.ephemeral_hash_only import EphemeralHashOnlyTransport
from mmbench.transports.full import FullTransport
from mmbench.transports.hash_only import HashOnlyTransport
from mmbench.transports.raw import RawTransport
from mmbench.transports.raw_file import RawFileTransport

TRANSPORTS: dict[str, type[Transport]] = {
    t.name: t
    for t in (
        FullTransport, EphemeralTransport, HashOnlyTransport, EphemeralHashOnlyTransport, RawTransport,
        RawFileTransport,
    )
}  # fmt: skip
MODES: tuple[str, ...] = tuple(TRANSPORTS)


def check_mode(name: str) -> str:
    if name not in TRANSPORTS:
        raise MmbenchError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}")
    return name


def make_transport(name: str, sent_hashes_max: int) -> Transport:
    return TRANSPORTS[check_mode(name)](sent_hashes_max=sent_hashes_max)
