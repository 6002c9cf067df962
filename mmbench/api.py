"""The Python API for notebooks: run a point, run a sweep, load results as a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.measure.engines import VLLM, VLLM_DEFAULTS, VllmOptions, check_engine_name
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import CSV_COLUMNS, PointRecord, ResultsFile, load
from mmbench.sweep.scenarios import Scenario, load_scenario, parse_scenario


def run_point(
    repeat: int = 0, memray_dir: str | Path | None = None, engine_url: str | None = None,
    engine: str = "embedded", vllm: VllmOptions | None = None, **params: Any,
) -> PointRecord:  # fmt: skip
    """Measure one point, e.g. run_point(mode="full", rollouts=8, image_size="512"); `engine_url` as
    `mmbench run --engine-url`; engine="vllm" (with `vllm=VllmOptions(python=..., model=...)`) as
    `--engine vllm`, whose points default to the vllm codec."""
    check_engine_name(engine)
    defaults = {k: v[0] for k, v in VLLM_DEFAULTS.items()} if engine == VLLM else {}
    config = PointConfig.from_dict({**defaults, **params}, where="run_point")
    options = HarnessOptions(
        memray_dir=Path(memray_dir) if memray_dir else None, engine_url=engine_url, engine=engine,
        vllm=vllm or VllmOptions(),
    )  # fmt: skip
    return measure_point(config, repeat, options)


def run_sweep(
    scenario: str | Scenario | dict[str, Any],
    out: str | Path | None = None,
    repeats: int | None = None,
    cluster: str | None = None,
    engine_url: str | None = None,
    engine: str | None = None,
    vllm: VllmOptions | None = None,
    **overrides: Any,
) -> ResultsFile:
    """Run a scenario (a name, a path, a Scenario, or a dict in the TOML's shape); keyword
    arguments override its axes (a value or a list). `cluster` as `mmbench sweep --cluster`,
    `engine_url` as `--engine-url`, `engine` as `--engine` (default: the scenario's, else embedded)."""
    from mmbench.sweep.loop import run_sweep as _run

    if isinstance(scenario, dict):
        chosen = parse_scenario(scenario, "notebook", "scenario dict")
    elif isinstance(scenario, Scenario):
        chosen = scenario
    else:
        chosen = load_scenario(scenario)
    axes = {k: v if isinstance(v, list) else [v] for k, v in overrides.items()}
    name = check_engine_name(engine or chosen.engine or "embedded")
    if name == VLLM and "codec" not in axes and not chosen.sets("codec"):
        axes = {**VLLM_DEFAULTS, **axes}
    chosen = chosen.with_overrides(axes, repeats)
    out_dir = Path(out) if out is not None else None
    if name == VLLM:
        if cluster is not None or engine_url is not None:
            raise MmbenchError("engine vllm goes with neither cluster nor engine_url")
        return _run(chosen, out_dir, HarnessOptions(engine=VLLM, vllm=vllm or VllmOptions()))
    if engine_url is not None:
        if cluster is not None:
            raise MmbenchError(
                "engine_url and cluster do not go together: an external engine serves one client"
            )
        return _run(chosen, out_dir, HarnessOptions(engine_url=engine_url))
    if cluster is None:
        return _run(chosen, out_dir)
    from mmbench.cluster.address import parse_cluster
    from mmbench.cluster.connect import cluster_runner

    with cluster_runner(parse_cluster(cluster)) as runner:
        return _run(chosen, out_dir, runner=runner)


def to_dataframe(results: ResultsFile) -> pd.DataFrame:
    """One row per point, one dotted column per figure (`client.retained_live_bytes`, ...)."""
    return pd.DataFrame([p.flat() for p in results.points], columns=CSV_COLUMNS)


def load_results(path: str | Path) -> pd.DataFrame:
    """A results directory (or results.json) as a DataFrame, one row per point."""
    return to_dataframe(load(path))
