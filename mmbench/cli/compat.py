"""`mmbench compat`: run a small point of every mode on each engine setup and print which survive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.measure.engines import VLLM
from mmbench.reporters.compat_report import markdown, messages, table
from mmbench.results import atomic_write
from mmbench.sweep.compat import SETUP_NAMES, SETUPS, choose_setups, run_compat
from mmbench.sweep.loop import PlannedPoint
from mmbench.transports.registry import MODES

COMPAT_MD = "compat.md"


@c.handle_errors
@c.with_engine_flags("engine_model", "vllm_python", "engine_ready_timeout")
def compat(
    engine_flags: c.EngineFlags,
    out: Annotated[Path | None, typer.Option(help="results directory, new [runs/compat-UTCTIME]")] = None,
    setups: Annotated[
        str | None,
        typer.Option(
            help=f"engine setups, comma-separated: {', '.join(SETUP_NAMES[: len(SETUPS)])} (default: "
            "these), or a fleet's: fleet (2 embedded replicas behind vllm-router, 4 policies x the "
            "session header on and off), vllm-fleet (the same with 2 vLLMs), or one of theirs"
        ),
    ] = None,
    modes: Annotated[
        str | None, typer.Option("--modes", "--mode", help=f"modes: {', '.join(MODES)} (default: all)")
    ] = None,
) -> None:
    """Which modes survive which engine: a small point of every mode on each setup's engine.

    Each setup's engine is reset between its points. The setups: the embedded engine; vLLM by
    default, without its processor cache, with the shm cache, and behind two API servers; and, asked
    for, fleets behind vllm-router."""
    chosen = choose_setups([s.strip() for s in setups.split(",")] if setups else None)
    wanted = tuple(m.strip() for m in modes.split(",")) if modes else tuple(MODES)
    vllm = engine_flags.vllm_only()
    if any(s.engine == VLLM for s in chosen):
        # vLLM's environment, before anything runs: its sweep runs second, after the embedded one's
        vllm.check([])
    out_dir = out or c.runs_dir("compat")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise MmbenchError(f"{out_dir} is not empty; choose another --out")

    def on_start(p: PlannedPoint) -> None:
        c.console.print(f"  {p.config.mode} ({p.index}/{p.total}) ...", highlight=False)

    result = run_compat(
        out_dir, chosen, wanted, vllm, on_start=on_start,
        on_engine=lambda e: c.console.print(f"[bold]{e}[/bold] -> {out_dir / e}", highlight=False),
    )  # fmt: skip
    text = markdown(result)
    atomic_write(out_dir / COMPAT_MD, text)
    c.console.print(table(result))
    for line in messages(result):
        c.console.print(f"- {line}", markup=False, highlight=False)
    for s in result.setups:
        c.console.print(f"{s.name}: {result.versions.get(s.name, 'not run')}", highlight=False)
    c.console.print(f"wrote {out_dir / COMPAT_MD}", highlight=False)
