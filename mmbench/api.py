"""The Python API for notebooks: run a point, run a sweep, load results as a DataFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mmbench.config import PointConfig
from mmbench.measure.engines import Vllm, choose_engine
from mmbench.measure.harness import HarnessOptions, measure_point
from mmbench.results import CSV_COLUMNS, PointRecord, ResultsFile, load
from mmbench.sweep.scenarios import Scenario, load_scenario, parse_scenario


def run_point(
    repeat: int = 0, memray_dir: str | Path | None = None, engine_url: str | None = None,
    engine: str | None = None, vllm: Vllm | None = None, **params: Any,
) -> PointRecord:  # fmt: skip
    """Measure one point, e.g. run_point(mode="full", rollouts=8, image_size="512"); `engine_url` as
    `mmbench run --engine-url`; engine="vllm" (with `vllm=Vllm(python=..., model=...)`) as
    `--engine vllm`, whose points default to the vllm codec. A bad mix fails as the CLI's does."""
    chosen = choose_engine(engine, engine_url, vllm)
    config = PointConfig.from_dict({**chosen.defaults, **params}, where="run_point")
    chosen.check([config])  # before it runs (the harness does not check)
    options = HarnessOptions(memray_dir=Path(memray_dir) if memray_dir else None, engine=chosen)
    return measure_point(config, repeat, options)


def run_sweep(
    scenario: str | Scenario | dict[str, Any],
    out: str | Path | None = None,
    repeats: int | None = None,
    cluster: str | None = None,
    engine_url: str | None = None,
    engine: str | None = None,
    vllm: Vllm | None = None,
    **overrides: Any,
) -> ResultsFile:
    """Run a scenario (a name, a path, a Scenario, or a dict in the TOML's shape); keyword
    arguments override its axes (a value or a list). `cluster` as `mmbench sweep --cluster`,
    `engine_url` as `--engine-url`, `engine` as `--engine` (default: the scenario's, else embedded);
    a bad mix fails as the CLI's does."""
    from mmbench.sweep.loop import run_sweep as _run

    if isinstance(scenario, dict):
        chosen = parse_scenario(scenario, "notebook", "scenario dict")
    elif isinstance(scenario, Scenario):
        chosen = scenario
    else:
        chosen = load_scenario(scenario)
    served_by = choose_engine(engine, engine_url, vllm, cluster is not None, chosen.engine)
    axes = {k: v if isinstance(v, list) else [v] for k, v in overrides.items()}
    chosen = chosen.with_overrides({**chosen.unset(served_by.defaults), **axes}, repeats)
    out_dir = Path(out) if out is not None else None
    options = HarnessOptions(engine=served_by)
    if cluster is None:
        return _run(chosen, out_dir, options)
    from mmbench.cluster.address import parse_cluster
    from mmbench.cluster.connect import cluster_runner

    with cluster_runner(parse_cluster(cluster)) as runner:
        return _run(chosen, out_dir, options, runner=runner)


def to_dataframe(results: ResultsFile) -> pd.DataFrame:
    """One row per point, one dotted column per figure (`client.retained_live_bytes`, ...)."""
    return pd.DataFrame([p.flat() for p in results.points], columns=CSV_COLUMNS)


def load_results(path: str | Path) -> pd.DataFrame:
    """A results directory (or results.json) as a DataFrame, one row per point."""
    return to_dataframe(load(path))
