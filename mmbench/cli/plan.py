"""`mmbench plan`: what a machine can run, per mode: predicted, or (--measure) measured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import psutil
import typer

from mmbench.analysis.plan import Plan
from mmbench.analysis.plan import plan as make_plan
from mmbench.cli import common as c
from mmbench.errors import MmbenchError
from mmbench.measure.engine_pool import engine_pool
from mmbench.measure.engines import Vllm
from mmbench.measure.harness import HarnessOptions
from mmbench.measure.preflight import available_bytes
from mmbench.reporters.capacity_report import capacity_json, capacity_markdown, capacity_table, probe_line
from mmbench.reporters.plan_report import plan_table, render_json, render_markdown
from mmbench.sweep.capacity import ModeCapacity, Probe, Search
from mmbench.units import fmt_bytes, parse_size

FORMATS = ("table", "markdown", "json")


@c.handle_errors
@c.with_point_flags
@c.with_engine_flags(
    "engine", "engine_model", "engine_arg", "vllm_python", "engine_ready_timeout", "fresh_engine"
)
def plan(
    point_flags: dict[str, str | None],
    engine_flags: c.EngineFlags,
    memory: Annotated[
        str | None,
        typer.Option(
            help="the machine's memory, e.g. 24GiB (default: this machine's total; --measure: what is "
            "available now)",
            show_default=False,
        ),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="also find the largest K that fits by measuring points (from the model's typical K, "
            "stepping and bisecting; each under the watchdog with --memory as its limit)",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="--measure: the results directory \\[runs/capacity-UTCTIME]; the same --out again measures "
            "only the points it lacks",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"output: {', '.join(FORMATS)}")] = "table",
) -> None:
    """Per mode, the largest K whose predicted peak fits a machine's memory (--measure: and the largest
    K measured to fit)."""
    if fmt not in FORMATS:
        raise MmbenchError(f"--format: unknown value {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if out is not None and not measure:
        raise MmbenchError("--out is where --measure keeps its points; add --measure")
    engine = engine_flags.choose()
    flags = dict(point_flags)
    if flags.pop("rollouts") is not None:
        raise MmbenchError("--rollouts: plan finds the largest K itself; give the other point flags")
    modes = [m.strip() for m in (flags.pop("mode") or "").split(",") if m.strip()]
    base = c.single_point(flags, engine_flags.point_defaults(engine))
    if memory is not None:
        budget = parse_size(memory, "--memory")
    else:
        budget = available_bytes() if measure else int(psutil.virtual_memory().total)
    if measure:
        free = available_bytes()
        if budget > free:
            raise MmbenchError(
                f"--memory {fmt_bytes(budget)} is more than this machine has available ({fmt_bytes(free)}):"
                " --measure runs points up to it; give at most that, or measure on a larger machine"
            )
    predicted = make_plan(base, budget, modes or None, engine=engine.served)
    if not measure:
        _show_plan(predicted, fmt)
        return
    # every mode's point fits the engine (and vLLM's environment is found), before any runs
    engine.check([replace(base, mode=m.mode) for m in predicted.modes])
    out_dir = out or c.runs_dir("capacity")
    found: list[ModeCapacity] = []
    # a real engine is started once for the search's points (per configuration), as in a sweep
    with engine_pool(fresh=engine_flags.fresh) as pool:
        options = HarnessOptions(engine=engine, engine_pool=pool if isinstance(engine, Vllm) else None)
        search = Search(base, budget, engine.served, out_dir, options, on_point=_progress)
        search.check_resumable()
        c.err_console.print(
            f"mmbench: measuring the largest K within {fmt_bytes(budget)} per mode -> {out_dir}", markup=False
        )
        for m in predicted.modes:
            found.append(search.mode(m.mode, m.rollouts, m.typical_rollouts))
    if fmt == "table":
        c.console.print(capacity_table(predicted, found, engine.served))
    else:
        render = capacity_markdown if fmt == "markdown" else capacity_json
        typer.echo(render(predicted, found, engine.served), nl=False)
    # Beside a table it is one more line to read; beside markdown or JSON it goes to stderr, so that
    # stdout is the document alone (`| jq`, `> capacity.md`).
    human = c.console if fmt == "table" else c.err_console
    human.print(f"results: {out_dir / 'results.json'}    report: mmbench report {out_dir}", highlight=False)
    errors = [f for f in found if f.error]
    if errors:
        c.err_console.print(f"mmbench: {errors[0].error}", markup=False)
        c.exit_with(1)


def _show_plan(predicted: Plan, fmt: str) -> None:
    if fmt == "table":
        c.console.print(plan_table(predicted))
    else:
        typer.echo((render_markdown if fmt == "markdown" else render_json)(predicted), nl=False)


def _progress(probe: Probe) -> None:
    c.err_console.print(probe_line(probe), markup=False)
