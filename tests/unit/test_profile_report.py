"""mmbench profile on hand-built records: sites, categories, the renderer-output split, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from mmbench.config import PointConfig
from mmbench.measure.profile import (
    CATEGORIES,
    ProfileResult,
    Tally,
    cache_fraction,
    category_of,
    site_of,
    snapshots,
)
from mmbench.reporters.profile_report import profile_markdown, profile_tables, site_category
from mmbench.results import PointRecord
from tests.helpers import flat_record

ROOT = Path("/src/mmbench")
MIB = 1024**2


def frame(function: str, rel: str, line: int) -> tuple[str, str, int]:
    return function, f"{ROOT}/{rel}", line


LIB = ("write", "/venv/lib/python3.11/site-packages/httpcore/_backends/anyio.py", 50)
THREAD = ("run", "/usr/lib/python3.11/threading.py", 982)
PIXELS = frame("preprocess", "world/renderer.py", 59)
TEMP = frame("preprocess", "world/renderer.py", 46)
BODY = frame("build_body", "world/client.py", 73)
SOURCE = frame("make_source", "world/images.py", 83)
TOKENS = frame("rollout", "rollout/driver.py", 234)
PROCESS = frame("process", "world/renderer.py", 145)


@pytest.mark.parametrize(
    ("path", "function", "category"),
    [
        ("mmbench/world/renderer.py", "preprocess", "renderer"),
        ("mmbench/world/renderer.py", "to_bfloat16_bits", "renderer"),
        ("mmbench/world/renderer.py", "put", "image_cache"),
        ("mmbench/world/codec.py", "pixel_checksum", "renderer"),
        ("mmbench/world/codec.py", "encode_item", "transport"),
        ("mmbench/world/client.py", "build_body", "transport"),
        ("mmbench/world/client.py", "post_generate", "engine_client"),
        ("mmbench/rollout/driver.py", "run", "engine_client"),
        ("mmbench/rollout/driver.py", "_build", "transport"),
        ("mmbench/rollout/driver.py", "rollout", "trajectory"),
        ("mmbench/rollout/raw.py", "read_answer", "trajectory"),
        ("mmbench/world/media.py", "data_url", "sources"),
        ("mmbench/world/sidecar.py", "extended", "trajectory"),
        ("mmbench/transports/hash_only.py", "stored", "trajectory"),
        ("mmbench/transports/hash_only.py", "plan", "transport"),
        ("mmbench/world/images.py", "make_source", "sources"),
        ("mmbench/measure/accounting.py", "account", "other"),
    ],
)
def test_category_of(path: str, function: str, category: str) -> None:
    assert category_of(path, function) == category


def test_site_is_the_innermost_mmbench_frame() -> None:
    numpy = ("asarray", "/venv/lib/python3.11/site-packages/numpy/core.py", 10)
    stack = [numpy, PIXELS, PROCESS, THREAD]
    assert site_of(stack, ROOT) == ("mmbench/world/renderer.py", "preprocess", 59)
    assert site_of([LIB, THREAD], ROOT) is None
    # a file that only starts like the package is not in it
    assert site_of([("f", "/src/mmbench_extra/x.py", 1)], ROOT) is None


def tallies() -> tuple[Tally, Tally]:
    high = Tally.of(
        [
            ([PIXELS, PROCESS], 100 * MIB, 16),
            ([TEMP, PROCESS], 12 * MIB, 1),  # a render in flight: a temporary
            ([BODY], 300 * MIB, 4),
            ([SOURCE], 8 * MIB, 16),
            ([TOKENS], 10_000, 4),
            ([LIB], 20 * MIB, 1),  # memray lost the coroutine's mmbench frames
            ([THREAD], 1000, 2),
        ],
        ROOT,
    )
    retained = Tally.of(
        [([PIXELS, PROCESS], 100 * MIB, 16), ([SOURCE], 8 * MIB, 16), ([TOKENS], 10_000, 4), ([], 500, 1)],
        ROOT,
    )
    return high, retained


def test_categories_sum_to_the_snapshot_total_and_pixels_go_to_their_holders() -> None:
    high, retained = snapshots(*tallies(), fraction=0.25, top=3)
    for snap in (high, retained):
        assert sum(c.bytes for c in snap.categories) == snap.total_bytes
        assert sum(c.share for c in snap.categories) == pytest.approx(1.0)
        assert [c.key for c in snap.categories] == list(CATEGORIES)
    assert retained.total_bytes == 108 * MIB + 10_500
    assert retained.category("image_cache").bytes == 25 * MIB
    assert retained.category("trajectory").bytes == 75 * MIB + 10_000
    assert retained.category("renderer").bytes == 0
    assert retained.category("outside").bytes == 500
    # at the peak the same split applies to the output site; the temporary stays with the renderer
    assert high.category("renderer").bytes == 12 * MIB
    assert high.category("image_cache").bytes == 25 * MIB
    assert high.category("transport").bytes == 300 * MIB
    assert high.category("engine_client").bytes == 20 * MIB
    assert high.frameless_bytes == 20 * MIB + 1000 and high.frameless_engine_bytes == 20 * MIB
    # ranked by bytes, cut at top, every site an mmbench function
    assert [s.function for s in high.sites] == ["build_body", "preprocess", "preprocess"]
    assert high.site_count == 5
    assert all(s.path.startswith("mmbench/") for s in high.sites)
    pixels = high.sites[1]
    assert (pixels.line, pixels.category) == (59, "trajectory")
    assert dict(pixels.split) == {"trajectory": 75 * MIB, "image_cache": 25 * MIB}
    assert high.sites[2].category == "renderer" and not high.sites[2].split


def test_without_a_ledger_the_pixels_stay_with_the_renderer() -> None:
    _, retained = snapshots(*tallies(), fraction=None)
    assert retained.category("renderer").bytes == 100 * MIB
    assert retained.category("trajectory").bytes == 10_000


def record(**fields: object) -> PointRecord:
    config = PointConfig(mode="full", rollouts=4, turns=4, image_size="512")
    base: dict[str, object] = dict(config.to_dict(), repeat=0, status="ok")
    base.update(fields)
    return flat_record(**base)


def test_cache_fraction_comes_from_the_ledger() -> None:
    assert cache_fraction(record(stored_pixel_bytes=75, renderer_cache_only_bytes=25)) == 0.25
    assert cache_fraction(record(stored_pixel_bytes=0, renderer_cache_only_bytes=0)) is None
    assert cache_fraction(record()) is None


def result(tmp_path: Path) -> ProfileResult:
    high, retained = snapshots(*tallies(), fraction=0.25)
    rec = record(
        memray_peak_bytes=high.total_bytes, peak_bytes=400 * MIB, retained_live_bytes=110 * MIB,
        stored_pixel_bytes=75 * MIB, renderer_cache_only_bytes=25 * MIB, source_bytes=8 * MIB,
    )  # fmt: skip
    return ProfileResult(
        rec, tmp_path, tmp_path / "full-K4-r0.bin", False, high, retained,
        {"high_water_mark": tmp_path / "flamegraph.html"}, 0.25, ("a note",),
    )  # fmt: skip


def test_markdown_shows_categories_sites_and_the_split(tmp_path: Path) -> None:
    text = profile_markdown(result(tmp_path))
    assert text.startswith("# mmbench profile: full, K=4, N=4, 512x512\n")
    assert "| trajectory storage | 75.0 MiB | 17.0 % | 75.0 MiB | 69.4 % |" in text
    assert "| total | 440.0 MiB | 100 % | 108.0 MiB | 100 % |" in text
    assert "| 1 | build_body | mmbench/world/client.py:73 | transport encoding | 300.0 MiB |" in text
    assert "image cache 25.0 % + trajectory storage 75.0 % (renderer output)" in text
    assert "20.0 MiB of it under httpx/httpcore/h11/anyio" in text
    assert "- a note" in text
    assert "flamegraph.html" in text


def test_site_category_names_the_renderer_output() -> None:
    high, _ = snapshots(*tallies(), fraction=0.0)
    pixels = next(s for s in high.sites if s.line == 59)
    assert site_category(pixels) == "trajectory storage (renderer output)"
    temp = next(s for s in high.sites if s.line == 46)
    assert site_category(temp) == "renderer preprocessing"


def test_rich_tables_render(tmp_path: Path) -> None:
    console = Console(width=200, record=True)
    for renderable in profile_tables(result(tmp_path)):
        console.print(renderable)
    text = console.export_text()
    assert "Heap by category" in text and "trajectory storage" in text
    assert "mmbench/world/renderer.py:59" in text


def test_json_is_versioned_and_complete(tmp_path: Path) -> None:
    data = json.loads(json.dumps(result(tmp_path).to_dict()))
    assert data["schema_version"] == 2
    assert data["files"] == {"capture": "full-K4-r0.bin", "flamegraph_high_water_mark": "flamegraph.html"}
    retained = data["snapshots"]["retained"]
    assert sum(c["bytes"] for c in retained["categories"].values()) == retained["total_bytes"]
    assert retained["sites"][0]["split"] == {"image_cache": 25 * MIB, "trajectory": 75 * MIB}
