"""Preloaded into each worker process of `--cluster local:N` (dask calls `dask_setup`)."""

from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    """Ctrl-C in a terminal reaches the whole process group; the sweep's client stops the local
    cluster itself, so its workers ignore SIGINT instead of dying with a traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
