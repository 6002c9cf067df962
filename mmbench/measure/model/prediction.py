"""What the model predicts for one point: apart from the package's __init__, so that the modules
it builds on (raw.py) import it without a cycle."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Prediction:
    # --- retained by the client (live data, the K trajectories alive), in bytes
    retained_bytes: int
    pixel_bytes: int
    source_bytes: int
    renderer_cache_only_bytes: int
    descriptor_bytes: int
    other_bytes: int
    # --- the wire
    bytes_shipped: int
    bytes_shipped_per_rollout: int
    # --- peaks: the client's above its baseline, the engine's RSS as a whole
    peak_bytes: int
    pixel_bytes_per_image: int
    engine_cache_bytes: int
    engine_peak_bytes: int
    client_baseline_bytes: int = 0
    # --- what the renderer pool and the engine cache do (expected counts over the run)
    renderer_cache_hits: int = 0
    renderer_cache_misses: int = 0
    rederived: int = 0
    engine_cache_hits: int = 0
    engine_cache_misses: int = 0
    fallbacks: int = 0
    requests: int = 0
    full_items_sent: int = 0
    null_items_sent: int = 0
    # images the engine preprocesses: none where the client ships processed items
    engine_preprocess_calls: int = 0
    # --- a fleet (replicas >= 1; None otherwise): null slots sent to a replica that lacks an item,
    # every attempt counted (the router's retries included), the router's retries, and the rollouts
    # that fail (their requests met a dead replica or every circuit open, retry_budget times over)
    fleet_misses: int | None = None
    router_retries: int | None = None
    failed_rollouts: int | None = None
    # --- typical peaks: the bounds above scaled, above the live data (client) and above baseline
    # and cache (engine), to the median of what the calibration points measured (Constants.typical)
    typical_peak_bytes: int = 0
    typical_engine_peak_bytes: int = 0
    # the engine's part of its peak the model knows exactly: its baseline, and the embedded
    # engine's cache (its bytes measured equal to the model's at every calibration point)
    engine_floor_bytes: int = 0

    @property
    def system_peak_bytes(self) -> int:
        """What the point needs from the machine: the client's RSS at its peak (baseline included)
        and the engine's."""
        return self.client_baseline_bytes + self.peak_bytes + self.engine_peak_bytes

    @property
    def exact_bytes(self) -> int:
        """The part of the system peak that does not move from run to run: the processes'
        baselines (measured once ready: within 2 % of their medians over every calibration point)
        and the embedded engine's cache."""
        return self.client_baseline_bytes + self.engine_floor_bytes

    @property
    def typical_system_peak_bytes(self) -> int:
        """The system peak a typical run reaches (the median of the calibration data, not a bound)."""
        return self.client_baseline_bytes + self.typical_peak_bytes + self.typical_engine_peak_bytes

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
