"""Engine fidelity: the embedded engine against a real vLLM on the same points (`mmbench fidelity`).

Two results files, one measured with the embedded engine and one with `--engine vllm`, are paired
by every point parameter but vLLM's own flags (engine_args) and by repeat. Per pair: what each
engine received, held above its baseline (at the end and at its peak), preprocessed and served
from its cache, the client's fallbacks, the engine's CPU seconds and the request latency the client
saw; each as embedded, vLLM and their ratio vLLM / embedded. Nothing is re-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmbench.config import field_names
from mmbench.errors import MmbenchError
from mmbench.record import ProcessFigures
from mmbench.results import PointRecord, ResultsFile
from mmbench.transports.registry import MODES
from mmbench.units import RSS_NOISE_FLOOR_BYTES

VLLM = "vllm"
TOLERANCE = 0.10  # a figure of vLLM's beyond this share of the embedded engine's is a difference


def _above(value: int | None, base: int | None) -> int | None:
    return None if value is None or base is None else value - base


# figure -> (how a record gives it, whether it is an RSS reading: none below the noise floor)
FIGURES: dict[str, tuple[Callable[[PointRecord], float | None], bool]] = {
    "bytes received": (lambda r: r.engine.figures.bytes_received, False),
    "retained": (lambda r: _above(r.engine.figures.rss_bytes, r.engine.figures.rss_baseline_bytes), True),
    "peak": (lambda r: _above(r.engine.figures.peak_rss_bytes, r.engine.figures.rss_baseline_bytes), True),
    "preprocessed": (lambda r: r.engine.figures.preprocess_calls, False),
    "cache hits": (lambda r: r.engine.figures.cache_hits, False),
    "fallbacks": (lambda r: r.traffic.fallbacks, False),
    "engine cpu s": (lambda r: r.engine.figures.cpu_s, False),
    "latency p50 s": (lambda r: r.traffic.latency_p50_s, False),
    "latency p95 s": (lambda r: r.traffic.latency_p95_s, False),
}
PAIRED_BY_NOT = ("engine_args",)
# vLLM's process kinds, as its records name them (mmbench.world.engine.vllm.server)
PROCESS_KINDS = ("api_server", "engine_core", "worker")


@dataclass(frozen=True, slots=True)
class EngineRow:
    mode: str
    rollouts: int
    params: tuple[tuple[str, object], ...]  # the pair's other parameters that vary in the results
    repeat: int
    embedded: PointRecord
    vllm: PointRecord

    def pair(self, figure: str) -> tuple[float | None, float | None]:
        read = FIGURES[figure][0]
        return read(self.embedded), read(self.vllm)

    def ratio(self, figure: str) -> float | None:
        """vLLM / embedded; None where either is unknown or zero, or (RSS) below the noise floor."""
        a, b = self.pair(figure)
        if a is None or b is None or a == 0:
            return None
        if FIGURES[figure][1] and min(a, b) < RSS_NOISE_FLOOR_BYTES:
            return None
        return float(b / a)

    def differs(self, figure: str) -> bool:
        """vLLM's figure is more than TOLERANCE away from the embedded engine's (counts that are
        zero on one side only differ too)."""
        a, b = self.pair(figure)
        if a is None or b is None:
            return False
        if a == 0 or b == 0:
            return a != b
        ratio = self.ratio(figure)
        return ratio is not None and abs(ratio - 1) > TOLERANCE

    def process(self, kind: str) -> tuple[float | None, float | None, float | None]:
        """What one kind of vLLM's processes (PROCESS_KINDS) held above its baseline at the end and
        at its peak, in bytes, and its CPU seconds: where vLLM's figures come from."""
        measured = (self.vllm.engine.figures.processes or {}).get(kind) or ProcessFigures()
        base, rss, peak = measured.baseline_rss_bytes, measured.rss_bytes, measured.peak_rss_bytes
        return (
            None if rss is None or base is None else rss - base,
            None if peak is None or base is None else peak - base,
            measured.cpu_s,
        )

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"mode": self.mode, "rollouts": self.rollouts, "params": dict(self.params),
                                  "repeat": self.repeat}  # fmt: skip
        names = ("retained", "peak", "cpu_s")
        out["vllm_processes"] = {
            kind: dict(zip(names, self.process(kind), strict=True)) for kind in PROCESS_KINDS
        }
        for figure in FIGURES:
            out[figure] = {"embedded": self.pair(figure)[0], "vllm": self.pair(figure)[1],
                           "ratio": self.ratio(figure), "differs": self.differs(figure)}  # fmt: skip
        return out


def engine_rows(embedded: ResultsFile, vllm: ResultsFile) -> list[EngineRow]:
    """Every (embedded, vLLM) pair of measured points with the same other parameters and repeat."""
    mine = [r for r in embedded.points if r.ok]
    theirs = [r for r in vllm.points if r.ok]
    if any(r.engine.kind == VLLM for r in mine):
        raise MmbenchError(
            "the first results file holds points measured with vLLM: give the embedded one first"
        )
    if not any(r.engine.kind == VLLM for r in theirs):
        raise MmbenchError("the second results file holds no point measured with --engine vllm")
    keys = [k for k in field_names() if k not in PAIRED_BY_NOT]
    by_key = {(*(getattr(r.config, k) for k in keys), r.repeat): r for r in mine}
    both = [*mine, *theirs]
    varying = [
        k for k in keys if k not in ("mode", "rollouts") and len({getattr(r.config, k) for r in both}) > 1
    ]
    rows = []
    for v in theirs:
        e = by_key.get((*(getattr(v.config, k) for k in keys), v.repeat))
        if e is not None and v.engine.kind == VLLM:
            params = tuple((k, getattr(v.config, k)) for k in varying)
            rows.append(EngineRow(v.config.mode, v.config.rollouts, params, v.repeat, e, v))
    if not rows:
        raise MmbenchError(
            "no point of the two results files has the same parameters: run the same scenario twice"
        )
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(rows, key=lambda r: (str(r.params), order.get(r.mode, len(order)), r.rollouts, r.repeat))
