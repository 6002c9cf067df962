"""The one way a stage process runs: read its job, run it, write its result whole, or say in one line
why the trajectories cannot be trained on (exit 2, for the point's cause)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from mmbench.launch import write_result
from mmbench.launch.lifecycle import set_process_name

J = TypeVar("J")


def serve(
    argv: list[str] | None, name: str, job_type: type[J], run: Callable[[J], Any], who: Callable[[J], str]
) -> int:
    """argv = [job path, result path]; `who` names the process in its one-line error."""
    args = sys.argv[1:] if argv is None else argv
    set_process_name(name)
    job = msgspec.json.decode(Path(args[0]).read_bytes(), type=job_type)
    try:
        result = run(job)
    except ValueError as exc:  # what it cannot train on (a media error is a ValueError too)
        print(f"{who(job)}: {exc}", file=sys.stderr)
        return 2
    write_result(args[1], msgspec.json.encode(result))
    return 0


def exit_now(code: int) -> None:
    """The result is on disk: skip the interpreter's teardown."""
    sys.stderr.flush()
    os._exit(code)
