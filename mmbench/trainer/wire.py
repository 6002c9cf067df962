"""What crosses the stage's process boundaries, one msgspec type each way (no numpy here).

- `Trace`: one rollout as the env worker hands it to the orchestrator (the trajectory as the mode
  kept it: pixels, descriptors with their sources, or media URLs), written by the worker after
  its readings (mmbench.trainer.traces).
- `RankBatch`: one DP rank's step as the orchestrator ships it (msgpack, one file per rank),
  mirroring prime-rl's `MicroBatch`: `mm_kwargs` of `EncodedTensor`s on main, `mm_refs` of
  `MMImageRef`s in PR #3320 (and the ephemeral branch's deferred re-derivation).
- The jobs and results of the orchestrator and trainer processes (JSON).
"""

from __future__ import annotations

import msgspec


class TraceImage(msgspec.Struct, frozen=True):
    """One image slot of a rollout's last prompt."""

    mm_hash: str
    grid: list[int]  # image_grid_thw, (t, h, w)
    offset: int  # its placeholder tokens in the expanded stream
    length: int
    checksum: int | None  # the pixels the engine used (crc32; None: the engine reported none)
    pixels: bytes | None = None  # full, hash-only: the pixel bytes the trajectory holds
    dtype: str = "float32"
    shape: list[int] = []
    source: bytes | None = None  # processed modes: the encoded image the message holds
    url: str | None = None  # raw modes: the data: or file:// URL the message holds


class Trace(msgspec.Struct, frozen=True):
    rollout: int
    group: int  # the GRPO group (rollout // group_size)
    tokens: bytes  # the expanded token stream, int32
    images: list[TraceImage]


class EncodedTensor(msgspec.Struct, frozen=True):
    """A tensor as raw bytes (prime-rl's `EncodedTensor`)."""

    dtype: str
    shape: list[int]
    data: bytes


class MMImageRef(msgspec.Struct, frozen=True):
    """An image by reference (prime-rl PR #3320's `MMImageRef`): a data: or file:// URL and where its
    tokens sit in the packed row, with the grid the engine reported to check the re-derivation."""

    url: str
    offset: int
    length: int
    grid: list[int]


class MicroBatch(msgspec.Struct, frozen=True):
    """One packed row (a bin of samples under seq_len)."""

    input_ids: bytes  # int32
    mm_token_type_ids: bytes  # int8, 1 for image tokens
    seq_lens: list[int]
    # which image each slot is, in order: (rollout, image index): the audit key of its checksum
    image_ids: list[tuple[int, int]]
    # pixels shipped (prime-rl main): pixel_values (all the row's images along dim 0), image_grid_thw
    mm_kwargs: dict[str, EncodedTensor] = {}
    mm_refs: list[MMImageRef] = []  # images by reference (#3320, ephemeral deferred to the trainer)
    mm_keys: list[str] = []  # dedup: each slot's key into RankBatch.unique


class UniqueImage(msgspec.Struct, frozen=True):
    """With dedup, an image shipped once per rank: its pixels or its reference."""

    pixels: EncodedTensor | None = None
    ref: MMImageRef | None = None


class RankBatch(msgspec.Struct, frozen=True):
    step: int
    rank: int
    micro_batches: list[MicroBatch]
    unique: dict[str, UniqueImage] = {}


# --- the processes' jobs and results (JSON files) ---------------------------------------------


class OrchestratorJob(msgspec.Struct, frozen=True):
    traces: str  # the file the worker wrote
    out_dir: str  # where rank_R.bin go
    model: str  # geometry preset
    dtype: str
    mode: str
    rederive_at: str
    dp_ranks: int
    dedup: bool
    seq_len: int


class OrchestratorResult(msgspec.Struct, frozen=True):
    samples: int
    micro_batches: int
    images: int
    unique_images: int
    pixel_bytes: int
    ref_bytes: int
    bytes_per_rank: list[int]
    traces_bytes: int
    baseline_rss_bytes: int
    held_traces_bytes: int
    peak_bytes: int
    retained_bytes: int
    retained_trimmed_bytes: int
    cpu_s: float
    build_s: float
    pack_s: float
    encode_s: float
    ship_s: float
    rederive_cpu_s: float
    processor_runs: int
    # the engine's checksum of every image slot: (rollout, image index, crc32 or None)
    expected: list[tuple[int, int, int | None]]
    longest_sample: int  # tokens


class TrainerJob(msgspec.Struct, frozen=True):
    batch: str  # the rank's file
    rank: int
    policy: str  # eager or lazy
    model: str
    dtype: str
    media_dir: str | None = None  # raw-file: the shared directory file:// refs may name
    plant: bool = False  # a test's hook: change one pixel of the first image (the check must see it)


class RankResult(msgspec.Struct, frozen=True):
    rank: int
    policy: str
    bytes_received: int
    micro_batches: int
    images: int
    baseline_rss_bytes: int
    peak_bytes: int
    held_pixel_bytes: int
    cpu_s: float
    materialize_cpu_s: float
    forward_cpu_s: float
    processor_runs: int
    disk_bytes_read: int
    # the checksum of every pixel tensor it used: (rollout, image index, crc32)
    checksums: list[tuple[int, int, int]]
