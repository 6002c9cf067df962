"""Who renders each turn: mmbench's simulated world (`sim`, the default) or the real `renderers`
library (`renderers`, the optional extra mmbench[renderers]).

`check_runnable` is the edge check of a point that is about to run (the library installed, the
tokenizer directory there); `make_driver` is the worker's one choice of backend for the driver. The library is
imported only when a point asks for it, so the sim never pays for transformers.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.rollout import RolloutDriver
from mmbench.transports.base import Transport

INSTALL_HINT = "pip install 'mmbench[renderers]' (or `make install`)"
# What the backend imports from the extra; the library's metadata misses httpx, so it is checked too.
LIBRARY_MODULES = ("renderers", "transformers", "tokenizers", "openai", "httpx")


@cache
def missing_modules() -> tuple[str, ...]:
    return tuple(m for m in LIBRARY_MODULES if importlib.util.find_spec(m) is None)


def check_runnable(config: PointConfig) -> None:
    """Refuse, with one line that says what to do, a point this machine cannot run."""
    if config.renderer != "renderers":
        return
    missing = missing_modules()
    if missing:
        raise MmbenchError(
            f"--renderer renderers needs the renderers library ({', '.join(missing)} not installed): "
            f"{INSTALL_HINT}"
        )
    if config.tokenizer:
        path = Path(config.tokenizer)
        if not path.is_dir():
            raise MmbenchError(
                f"--tokenizer {config.tokenizer}: no such directory (a local Hugging Face "
                "tokenizer directory; nothing is downloaded)"
            )
        if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise MmbenchError(
                f"--tokenizer {config.tokenizer}: no tokenizer.json or tokenizer_config.json there"
            )


def make_driver(
    config: PointConfig, transport: Transport, source_cache: Path | None, asset_dir: Path | None
) -> RolloutDriver:
    """The driver that runs this point's rollouts in the worker, with the point's backend."""
    if config.renderer == "renderers":
        from mmbench.backends.renderers.backend import LibraryBackend

        return RolloutDriver(config, transport, source_cache, asset_dir, backend=LibraryBackend)
    return RolloutDriver(config, transport, source_cache, asset_dir)
