"""The engine side of the model for a real vLLM (`--engine vllm`): its process tree's RSS at its peak.

What vLLM holds is not the embedded engine's: its tree (API server, engine core, model worker)
idles at `Constants.vllm_baseline` (the imports, the model, its KV cache and the multimodal warm-up),
and above it holds, measured (docs/vllm.md, "The engine under concurrency"), the multimodal items
its processor cache keeps (the engine core's copy, with the API server's own per item while a
request is handled), the request bodies it is reading and decoding at once (as the embedded engine,
growing with log2 K), and fixed bytes (the first requests' allocations: the tokenizer, the
encoder's activations). Each is a basis times a coefficient of `Constants.vllm_engine`, fitted
with mmbench.measure.model.calibration on the points of the sweeps named in constants.py.
"""

from __future__ import annotations

from mmbench.measure.model.constants import Constants
from mmbench.measure.model.peak import PeakInputs, dot

VLLM = "vllm"  # the engine name (mmbench.measure.engines.VLLM) whose points this model predicts


def vllm_basis(p: PeakInputs, cache_bytes: int) -> list[float]:
    """vLLM's peak above its baseline is these, each times its coefficient (Constants.vllm_engine):
    the items its processor cache holds, a body as large as the largest, one of the last turn per
    doubling of K, and fixed bytes. No term per rollout: fitted on K <= 64 (engine-concurrency), a
    term per rollout, of a last-turn body or of a largest one, comes out 0. The bound is set by
    hash-only at K=64, whose model worker holds 1.7 GiB above its baseline (the batch's encoder
    inputs: with bodies this small the API server no longer paces the requests reaching the
    scheduler), where full and raw hold 0.25-1.2 GiB; the same terms then over-predict full and raw
    past K=16 by up to a fifth (measured/predicted 0.79-0.89)."""
    return [float(cache_bytes), float(p.largest_body), p.log2_k * p.last_turn_body, 1.0]


def vllm_engine_peak(p: PeakInputs, cache_bytes: int, c: Constants) -> int:
    """vLLM's process tree's RSS at its peak: its baseline and what it holds above it."""
    return int(c.vllm_baseline + dot(vllm_basis(p, cache_bytes), c.vllm_engine))
