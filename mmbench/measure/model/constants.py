"""Every calibrated constant of the model, in one place, with the data it was fitted on.

Everything else the model predicts comes from the data structures and the driver simulated. These
are what a first principle cannot give here: the processes' baselines, what the client's and the
engine's work costs in CPU time (which sets the order requests reach the engine in), how many
request bodies are alive at once (which depends on how fast the engine answers against how fast
the client builds) and how much freed memory the allocator keeps.

To re-fit them (after a change to the engine, the client or the machine), run the scenarios named
below and `python -m mmbench.measure.model.calibration DIR...`: it prints the constants it fits
and how the model compares with every measured point, per scenario; paste the constants here.
"""

from __future__ import annotations

from dataclasses import dataclass

CALIBRATION_DATA = """\
2-core AMD EPYC, 24 GiB reference machine (shared with other jobs: load 1-3), Python 3.11, glibc 2.36,
torch 2.13.0 CPU, fork servers; the bounds, the typical shares and the baselines refitted 2026-12-03
(tightest_bound, each scenario weighed alike) on the results kept in results/calibration/ (their
results.json; `python -m mmbench.measure.model.calibration results/calibration/*` refits):
  mmbench sweep ci (seven runs); mmbench sweep default (four runs); mmbench sweep knobs (two);
  mmbench sweep image-cache (two);
  mmbench sweep modes (1024x1024, --codec vllm); mmbench sweep engine-fidelity (512x512, --codec vllm)
  and the same with --engine vllm (vllm_baseline, vllm_engine, typical[2]), with mmbench sweep
  engine-concurrency --engine vllm (full, hash-only, raw; K = 16-64) and the points of mmbench plan
  --measure --engine vllm --memory 8GiB --image-size 512 --turns 8 --modes full,raw; the points of
  mmbench plan --measure --memory 4GiB|8GiB --image-size 512 --turns 8 (full, ephemeral, hash-only,
  raw; K = 9-135);
timing (not refitted): mmbench run --mode hash-only|ephemeral+hash-only -k 8 --turns 8 --image-size 512
  --engine-cache-gb 0.05|0.1|0.2 with the engine's request log (then a patch, now `mmbench engine
  --request-log`: per request its arrival, body read, answer and items), and Renderer.process
  timed alone; codec_build: the vllm points above, and for stdlib (not refitted) mmbench sweep
  --modes full,hash-only --rollouts 4,8 --image-size 512 --codec stdlib"""


@dataclass(frozen=True, slots=True)
class Constants:
    #: the worker's RSS after setup (imports, renderer pool, warm-up): added to the client's peak
    client_baseline: int = 192_520_192
    #: the engine process's RSS once ready
    engine_baseline: int = 39_198_720
    #: CPU milliseconds per 512x512 float32 item (6 MiB; model/simulation.py scales them with the
    #: point's item): a render that misses and one that hits, a body's build and upload per item in
    #: full and per request, the engine's read and parse per item in full, its decode per item
    #: decoded and its cost per request. Measured on the engine-cache points (K=8, 0.05-0.2 GB): the
    #: renders timed alone (`Renderer.process`), the builds as the points' client_cpu_s over their
    #: items in full, the engine's parse and decode from its request log, its read as the rest of
    #: its engine_cpu_s
    timing: tuple[float, ...] = (31.0, 10.0, 25.0, 3.0, 10.0, 11.0, 1.0)
    #: per codec other than `fast`: what its body builds cost per item, as a factor on `fast`'s,
    #: fitted on the codec's points' client_cpu_s (vllm: modes and pr-verification at 1024x1024;
    #: stdlib: the sweep named above at 512x512); a codec not named here counts as 1
    codec_build: tuple[tuple[str, float], ...] = (("stdlib", 2.5), ("vllm", 2.9))
    #: the allocator's slack (see mmbench.measure.model.peak.slack_basis): per byte of the last
    #: turn's item text of all K rollouts, per byte of K images, per byte the renderer caches
    #: evicted, and fixed bytes
    slack: tuple[float, ...] = (0.0, 4.485, 0.89, 0.0, 0.0, 0.0)
    #: the transient (peak.transient_basis): bodies as large as the largest and bodies of the last
    #: turn per doubling of K, each for bodies glibc mmaps and for smaller ones; float32 images per
    #: render in flight; fixed bytes
    transient: tuple[float, ...] = (6.542, 2.268, 0.3373, 4.021, 5.602, 0.2954, 21.81, 0.0)
    #: what trim_after_build leaves of the slack and the transient where it trims the largest builds
    trim_factor: float = 0.411
    #: the bodies the engine holds at once (peak.engine_basis): as large as the largest, and of the
    #: last turn's per doubling of K
    engine: tuple[float, ...] = (2.475, 0.9219, 0.1518)
    #: the raw-media modes' client peak above its live data (model/raw.py's raw_basis): per byte of
    #: a last-turn body, of one per doubling of K, of a source image per rollout, and fixed bytes
    #: (raw and raw-file at 512x512 and 1024x1024, N=8)
    raw_client: tuple[float, ...] = (4.1, 6.069, 2.336, 1.976, 1838000.0)
    #: the raw-media modes' engine slack once its cache evicts (model/raw.py's
    #: evicted_slack_basis), per byte of the items evicted up to those it holds (raw at 512x512,
    #: N=8, K = 103-135 with a 4 GB engine cache full: mmbench plan --measure --memory 8GiB)
    raw_engine_slack: float = 0.1963
    #: per codec other than `fast` (whose points the coefficients above are fitted on): what its
    #: builds leave of the client's transient, and of the bodies the engine holds at once, as
    #: factors (codec, client, engine); a codec not named here counts as `fast` (1.0, 1.0)
    codec_peak: tuple[tuple[str, float, float], ...] = (("vllm", 0.9, 1.0),)
    #: a real vLLM's (--engine vllm) process tree's RSS once ready (API server, engine core, worker)
    vllm_baseline: int = 4_151_052_288
    #: what that tree holds above it at its peak (model/vllm.py's vllm_basis): per byte of the
    #: items its processor cache holds, of a body as large as the largest, of a last-turn body per
    #: doubling of K, and fixed bytes (six modes at K = 1-8, full, hash-only and raw at K = 10-64)
    vllm_engine: tuple[float, ...] = (2.01, 5.716, 3.881, 110300000.0)

    #: the typical run against the bounds above: the median, over the calibration points, of the
    #: measured share of the predicted client peak above its live data, of the embedded engine's
    #: peak above its baseline and cache, and of a real vLLM's above its baseline
    typical: tuple[float, float, float] = (0.7507, 0.6704, 0.7346)
    #: the same for the raw-media modes (their bounds are models of their own, model/raw.py): of
    #: the client's peak above its live data, and of the embedded engine's above baseline and cache
    typical_raw: tuple[float, float] = (0.8516, 0.9328)

    def typical_shares(self, client_renders: bool, engine_is_vllm: bool) -> tuple[float, float]:
        """(client, engine) typical shares of a point's bounds: the raw modes' client and embedded
        engine have their own; a real vLLM's engine side its own."""
        client, engine = (self.typical[0], self.typical[1]) if client_renders else self.typical_raw
        return client, self.typical[2] if engine_is_vllm else engine

    def build_factor(self, codec: str) -> float:
        """What this codec's body builds cost per item, as a factor on the `fast` codec's."""
        return next((factor for name, factor in self.codec_build if name == codec), 1.0)

    def codec_factors(self, codec: str) -> tuple[float, float]:
        """(client transient, engine bodies) factors of this codec's peaks."""
        for name, client, engine in self.codec_peak:
            if name == codec:
                return client, engine
        return 1.0, 1.0


CONSTANTS = Constants()
