"""The whole system per point (issue 31): env worker, engine, orchestrator and trainer ranks side by
side, each stage's memory, CPU, bytes it sends on and processor runs, measured beside predicted.

Read off records only (never running anything); the table and markdown reporters and the plot
render these rows. Memory is each process's peak above its own baseline; a stage with several
processes (the trainer's DP ranks) gives its largest one, and `system` adds every process that
would be alive at once in a deployment (one env worker, the engine, the orchestrator, every rank).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmbench.record import PointRecord, TrainerRanks

STAGES = ("env worker", "engine", "orchestrator", "trainer eager", "trainer lazy")


@dataclass(frozen=True, slots=True)
class StageCost:
    stage: str  # one of STAGES
    peak_bytes: int | None  # the largest process's, above its baseline
    predicted_peak_bytes: int | None
    all_peaks_bytes: int | None  # every process of the stage (the DP ranks summed)
    cpu_s: float | None  # summed over the stage's processes
    bytes_out: int | None  # what it sends on: the client's requests, the orchestrator's batches
    predicted_bytes_out: int | None
    processor_runs: int | None  # images it ran the processor on (the trainer: over its ranks)


@dataclass(frozen=True, slots=True)
class SystemRow:
    label: str  # mode, where ephemeral pixels are derived, G, dedup
    record: PointRecord
    stages: tuple[StageCost, ...]
    unique_images: int | None

    @property
    def checked(self) -> int | None:
        return self.record.trainer.checked

    @property
    def wrong(self) -> int | None:
        return self.record.trainer.wrong

    def stage(self, name: str) -> StageCost | None:
        return next((s for s in self.stages if s.stage == name), None)

    def system_peak_bytes(self, policy: str) -> int | None:
        """Env worker + engine + orchestrator + every trainer rank, each at its peak."""
        parts = [self.stage(n) for n in ("env worker", "engine", "orchestrator", f"trainer {policy}")]
        if any(p is None or p.all_peaks_bytes is None for p in parts):
            return None
        return sum(p.all_peaks_bytes for p in parts if p is not None and p.all_peaks_bytes is not None)

    def rederive_cpu_per_image_s(self) -> tuple[str, float] | None:
        """Where pixels were derived again after the client (orchestrator or trainer) and the CPU
        seconds per derivation there."""
        t = self.record.trainer
        o = t.orchestrator
        if o.processor_runs:
            return "orchestrator", (o.rederive_cpu_s or 0.0) / o.processor_runs
        for policy, ranks in (("trainer eager", t.eager), ("trainer lazy", t.lazy)):
            if sum(ranks.processor_runs):
                return policy, sum(ranks.materialize_cpu_s) / sum(ranks.processor_runs)
        return None


def label(r: PointRecord) -> str:
    c = r.config
    where = f"@{c.rederive_at}" if c.mode.startswith("ephemeral") else ""
    dedup = " dedup" if c.dedup == "on" else ""
    return f"{c.mode}{where} G={c.group_size}{dedup}"


def _above(value: int | None, baseline: int | None) -> int | None:
    return None if value is None or baseline is None else value - baseline


def _ranks(name: str, ranks: TrainerRanks, predicted: int | None, runs: int | None) -> StageCost | None:
    if not ranks.peak_bytes:
        return None
    return StageCost(
        name, max(ranks.peak_bytes), predicted, sum(ranks.peak_bytes), sum(ranks.cpu_s), None, None,
        sum(ranks.processor_runs),
    )  # fmt: skip


def system_row(r: PointRecord) -> SystemRow:
    t, e, p = r.trainer, r.engine.figures, r.prediction
    engine_base = e.rss_baseline_bytes
    engine_peak = _above(e.peak_rss_bytes, engine_base)
    o = t.orchestrator
    stages = [
        StageCost(
            "env worker", r.client.peak_bytes, p.peak_bytes, r.client.peak_bytes, r.client.cpu_s,
            r.traffic.bytes_shipped, p.bytes_shipped, r.client.rendering.cache_misses,
        ),
        StageCost(
            "engine", engine_peak, _above(p.engine_peak_bytes, engine_base), engine_peak, e.cpu_s, None, None,
            e.preprocess_calls,
        ),
        StageCost(
            "orchestrator", o.peak_bytes, t.prediction.orchestrator_peak_bytes, o.peak_bytes, o.cpu_s,
            o.bytes_shipped, t.prediction.bytes_shipped, o.processor_runs,
        ),
    ]  # fmt: skip
    for name, ranks, pred, runs in (
        ("trainer eager", t.eager, t.prediction.eager_peak_bytes, t.prediction.eager_processor_runs),
        ("trainer lazy", t.lazy, t.prediction.lazy_peak_bytes, t.prediction.lazy_processor_runs),
    ):
        stage = _ranks(name, ranks, pred, runs)
        if stage is not None:
            stages.append(stage)
    return SystemRow(label(r), r, tuple(stages), o.unique_images)


def system_rows(records: list[PointRecord]) -> list[SystemRow]:
    """A row per measured point that ran the trainer stage, in the records' order."""
    return [system_row(r) for r in records if r.ok and r.config.trainer != "off" and r.trainer.checked]
