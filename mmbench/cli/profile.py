"""`mmbench profile`: one point with memray tracking the worker; where its heap goes, by mmbench function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmbench.cli import common as c
from mmbench.measure.profile import DEFAULT_TOP, SITES_MD, profile_point
from mmbench.reporters.profile_report import profile_markdown, profile_tables
from mmbench.results import atomic_write


def default_out(mode: str, rollouts: int) -> Path:
    return c.runs_dir(f"profile-{mode}-K{rollouts}")


@c.handle_errors
@c.with_point_flags
@c.with_engine_flags(*c.POINT_ENGINE_FLAGS)
def profile(
    point_flags: dict[str, str | None],
    engine_flags: c.EngineFlags,
    out: Annotated[
        Path | None,
        typer.Option(
            help="output directory, new or empty [runs/profile-MODE-K<K>-UTCTIME]", show_default=False
        ),
    ] = None,
    native: Annotated[
        bool,
        typer.Option(
            help="also record native (C/C++) frames: numpy, torch, orjson internals in the flame graph"
        ),
    ] = False,
    top: Annotated[int, typer.Option(help="sites listed per snapshot")] = DEFAULT_TOP,
    force: Annotated[bool, typer.Option(help="run even when preflight predicts it will not fit")] = False,
    max_memory: c.MaxMemory = None,
) -> None:
    """Profile one point with memray: capture, flame graphs, top allocation sites by mmbench function."""
    engine = engine_flags.choose()
    config = c.single_point(point_flags, engine_flags.point_defaults(engine))
    limit = c.parse_max_memory(max_memory)
    out_dir = out if out is not None else default_out(config.mode, config.rollouts)
    with c.console.status(f"profiling {config.mode}, K={config.rollouts}, N={config.turns} with memray ..."):
        result = profile_point(config, out_dir, native, top=top, force=force, max_memory=limit, engine=engine)
    atomic_write(out_dir / SITES_MD, profile_markdown(result))
    for renderable in profile_tables(result):
        c.console.print(renderable)
    c.console.print(f"wrote {out_dir}")
    if result.missing:
        c.err_console.print(f"mmbench: not written: {', '.join(result.missing)}", markup=False)
        c.exit_with(1)
