"""What `--cluster` names: a scheduler address, a scheduler file, or `local:N`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from mmbench.errors import MmbenchError

LOCAL_MAX_WORKERS = 64
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    address: str | None  # a running scheduler's address; None for a local cluster
    local_workers: int = 0  # local:N: start N single-threaded worker processes here

    @property
    def local(self) -> bool:
        return self.address is None


def parse_cluster(text: str) -> ClusterSpec:
    """`tcp://host:8786`, a scheduler file (JSON written by `dask scheduler --scheduler-file`), or
    `local:N`; anything else is one error line."""
    text = text.strip()
    if text.startswith("local:"):
        n = text.removeprefix("local:")
        if not n.isdigit() or not 1 <= int(n) <= LOCAL_MAX_WORKERS:
            raise MmbenchError(f"--cluster {text}: local:N wants N workers, 1 to {LOCAL_MAX_WORKERS}")
        return ClusterSpec(None, int(n))
    if _ADDRESS.match(text):
        return ClusterSpec(text)
    path = Path(text)
    if path.is_file():
        return ClusterSpec(_address_in(path))
    raise MmbenchError(
        f"--cluster {text!r}: give a scheduler address (tcp://host:8786), a scheduler file, or local:N"
    )


def _address_in(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MmbenchError(f"--cluster {path}: not a scheduler file ({exc.__class__.__name__})") from None
    address = data.get("address") if isinstance(data, dict) else None
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise MmbenchError(f"--cluster {path}: the scheduler file names no address")
    return address
