"""The stage after the rollouts, run by the harness once the point's worker has written its traces:
the orchestrator process, then one trainer process per DP rank and policy, one after another (on
a 2-core machine, concurrent ranks would measure each other's CPU). Every process is a fresh
interpreter with one BLAS thread; every one is stopped on any failure.

The result is the record's `trainer` section, and the cause of a failure: a process that failed,
or pixels the trainer used that differ from the engine's (prime-rl #2786: pixels missing on the
trainer pushed the KL mismatch from ~0.001 to ~5.24; vLLM RFC #51472 asks for bit identity).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from mmbench.config import PointConfig
from mmbench.record import OrchestratorFigures, TrainerFigures, TrainerRanks
from mmbench.trainer.model import extrapolate, predict_trainer
from mmbench.trainer.orchestrator import rank_path
from mmbench.trainer.wire import OrchestratorJob, OrchestratorResult, RankResult, TrainerJob

TRANSPORT = "files"  # prime-rl's filesystem transport: step_N/rank_R.bin, temp + rename
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def policies(config: PointConfig) -> tuple[str, ...]:
    return ("eager", "lazy") if config.trainer == "both" else (config.trainer,)


@dataclass(frozen=True, slots=True)
class StageOutcome:
    figures: TrainerFigures
    failure: str | None = None  # why the point fails (None: it passed)


class StageFailed(Exception):
    pass


def _run(module: str, job: msgspec.Struct, work: Path, name: str, timeout_s: float) -> bytes:
    """One stage process to its end: its result's bytes, or StageFailed with its last stderr line."""
    job_path, out, err = work / f"{name}.job.json", work / f"{name}.out.json", work / f"{name}.err"
    job_path.write_bytes(msgspec.json.encode(job))
    env = {**os.environ, **ONE_THREAD}
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(job_path), str(out)], env=env, stdout=subprocess.DEVNULL,
            stderr=err_file, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise StageFailed(f"{name} timed out after {timeout_s:.0f} s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code != 0:
        lines = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
        raise StageFailed(lines[-1][-300:] if lines else f"{name} exited with code {code}")
    return out.read_bytes()


def _ranks(results: list[RankResult]) -> TrainerRanks:
    rs = sorted(results, key=lambda r: r.rank)
    return TrainerRanks(
        bytes_received=[r.bytes_received for r in rs], micro_batches=[r.micro_batches for r in rs],
        images=[r.images for r in rs], baseline_rss_bytes=[r.baseline_rss_bytes for r in rs],
        peak_bytes=[r.peak_bytes for r in rs], held_pixel_bytes=[r.held_pixel_bytes for r in rs],
        cpu_s=[r.cpu_s for r in rs], materialize_cpu_s=[r.materialize_cpu_s for r in rs],
        forward_cpu_s=[r.forward_cpu_s for r in rs], processor_runs=[r.processor_runs for r in rs],
        disk_bytes_read=[r.disk_bytes_read for r in rs],
    )  # fmt: skip


def _orchestrator(o: OrchestratorResult) -> OrchestratorFigures:
    return OrchestratorFigures(
        samples=o.samples, micro_batches=o.micro_batches, images=o.images, unique_images=o.unique_images,
        pixel_bytes=o.pixel_bytes, ref_bytes=o.ref_bytes, bytes_per_rank=o.bytes_per_rank,
        bytes_shipped=sum(o.bytes_per_rank), traces_bytes=o.traces_bytes,
        baseline_rss_bytes=o.baseline_rss_bytes, held_traces_bytes=o.held_traces_bytes,
        peak_bytes=o.peak_bytes, retained_bytes=o.retained_bytes,
        retained_trimmed_bytes=o.retained_trimmed_bytes, cpu_s=o.cpu_s, build_s=o.build_s, pack_s=o.pack_s,
        encode_s=o.encode_s, ship_s=o.ship_s, rederive_cpu_s=o.rederive_cpu_s,
        processor_runs=o.processor_runs,
    )  # fmt: skip


def check(expected: list[tuple[int, int, int | None]], used: list[RankResult]) -> tuple[int, int | None, str]:
    """(pixel tensors checked, how many differ from the engine's or were never used, the first
    one's description). Each policy's ranks together must use every image slot exactly once.
    Wrong is None (unknown) where the engine reported no checksum for some slot."""
    want = {(r, i): c for r, i, c in expected}
    unknown = any(c is None for c in want.values())
    checked = wrong = 0
    first = ""
    for policy in sorted({u.policy for u in used}):
        seen: dict[tuple[int, int], int] = {}
        for u in used:
            if u.policy == policy:
                for rollout, index, crc in u.checksums:
                    seen[(rollout, index)] = seen.get((rollout, index), 0) + 1
                    checked += 1
                    engine = want.get((rollout, index))
                    if engine is not None and crc != engine:
                        wrong += 1
                        first = first or f"{policy} rank {u.rank}: rollout {rollout} image {index}"
        for key in want:
            if seen.get(key) != 1:
                wrong += 1
                first = first or f"{policy}: rollout {key[0]} image {key[1]} used {seen.get(key, 0)} times"
    return checked, (None if unknown and not wrong else wrong), first


def run_stage(
    config: PointConfig, traces: Path, work: Path, media_dir: Path | None, source_bytes: float,
    timeout_s: float, plant: bool = False, client_runs: int | None = None, engine_runs: int | None = None,
) -> StageOutcome:  # fmt: skip
    """The stage on the point's traces, in `work` (its files are left there for the caller's
    temporary directory to remove)."""
    t0 = time.monotonic()
    prediction = predict_trainer(config, source_bytes)
    base = TrainerFigures(
        transport=TRANSPORT, client_processor_runs=client_runs, engine_processor_runs=engine_runs,
        prediction=prediction,
    )  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    try:
        job = OrchestratorJob(
            traces=str(traces), out_dir=str(work), model=config.model, dtype=config.dtype, mode=config.mode,
            rederive_at=config.rederive_at, dp_ranks=config.dp_ranks, dedup=config.dedup == "on",
            seq_len=config.seq_len,
        )  # fmt: skip
        orch = msgspec.json.decode(
            _run("mmbench.trainer.orchestrator", job, work, "orchestrator", timeout_s),
            type=OrchestratorResult,
        )
        traces.unlink(missing_ok=True)  # handed over: the trainer ranks read only their batches
        results: list[RankResult] = []
        for policy in policies(config):
            for rank in range(config.dp_ranks):
                tjob = TrainerJob(
                    batch=str(rank_path(work, rank)), rank=rank, policy=policy, model=config.model,
                    dtype=config.dtype, media_dir=str(media_dir) if media_dir else None,
                    plant=plant and rank == 0,
                )  # fmt: skip
                left = max(1.0, deadline - time.monotonic())
                out = _run("mmbench.trainer.rank", tjob, work, f"trainer-{policy}-{rank}", left)
                results.append(msgspec.json.decode(out, type=RankResult))
    except StageFailed as exc:
        return StageOutcome(base, f"trainer stage: {exc}")
    checked, wrong, first = check(orch.expected, results)
    eager = _ranks([r for r in results if r.policy == "eager"])
    lazy = _ranks([r for r in results if r.policy == "lazy"])
    orchestrator = _orchestrator(orch)
    figures = TrainerFigures(
        transport=TRANSPORT, wall_s=time.monotonic() - t0, checked=checked, wrong=wrong,
        client_processor_runs=client_runs, engine_processor_runs=engine_runs, orchestrator=orchestrator,
        eager=eager, lazy=lazy, prediction=prediction,
        extrapolated=extrapolate(config, orchestrator, eager, lazy),
    )  # fmt: skip
    failure = None
    if wrong:
        failure = (
            f"trainer stage: {wrong} of {checked} pixel tensors the trainer used differ from the engine's "
            f"(first: {first})"
        )
    return StageOutcome(figures, failure)
