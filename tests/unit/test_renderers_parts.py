"""The renderers library's objects as mmbench builds them offline (issue 11): the tokenizer, the
preset's processor, the pool, the stored-sidecar semantics, and the point parameters' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "renderers", reason="the renderers extra is not installed (pip install 'mmbench[renderers]')"
)

from renderers.base import MultiModalData as LibraryMM
from renderers.base import PlaceholderRange

from mmbench import backends
from mmbench.backends.renderers import parts
from mmbench.backends.renderers.backend import _stored
from mmbench.config import PointConfig
from mmbench.errors import MmbenchError
from mmbench.transports.base import Ship
from mmbench.transports.registry import make_transport
from mmbench.world.geometry import get_geometry
from mmbench.world.images import SourceSpec, make_source
from mmbench.world.renderer import Renderer, decode_image, image_hash
from mmbench.world.sidecar import MMItem, MultiModalData, Placeholder
from mmbench.world.tokens import SPECIAL_TOKENS, text_of
from mmbench.world.wire import IMAGE_PAD_TOKEN

QWEN3 = get_geometry("qwen3-vl")


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return parts.build_tokenizer()


def _message(*sources: bytes, text: str = "t1 t2") -> dict[str, object]:
    content: list[dict[str, object]] = [{"type": "text", "text": text}]
    content += [{"type": "image", "image": s} for s in sources]
    return {"role": "user", "content": content}


def test_built_tokenizer_has_qwens_special_tokens_and_encodes_text_to_its_ids(tokenizer: object) -> None:
    tok = tokenizer
    for token, tid in SPECIAL_TOKENS.items():
        assert tok.convert_tokens_to_ids(token) == tid  # type: ignore[attr-defined]
    assert tok.convert_tokens_to_ids("<|image_pad|>") == IMAGE_PAD_TOKEN  # type: ignore[attr-defined]
    ids = [0, 7, 149_999, 151_642]
    assert tok.encode(text_of(ids), add_special_tokens=False) == ids  # type: ignore[attr-defined]
    assert tok.decode(ids) == text_of(ids)


def test_a_saved_tokenizer_directory_loads_offline_and_encodes_the_same(
    tmp_path: Path, tokenizer: object
) -> None:
    tokenizer.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    loaded = parts.make_tokenizer(str(tmp_path))
    assert loaded.encode("t5 user t9", add_special_tokens=False) == [5, 151_670, 9]
    assert loaded.convert_tokens_to_ids("<|vision_start|>") == 151_652


def test_a_directory_that_holds_no_tokenizer_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(MmbenchError, match="cannot load a tokenizer there"):
        parts.load_tokenizer(str(tmp_path))


def test_library_render_matches_the_sim_in_hash_grid_shape_and_tokens(tokenizer: object) -> None:
    source = make_source(SourceSpec(200, 120), 0, 0, 0)
    renderer = parts.make_renderer(tokenizer, parts.make_processor(QWEN3), 4)
    out = renderer.render([_message(source)], add_generation_prompt=True)
    mm = out.multi_modal_data
    assert mm is not None
    sim = Renderer(QWEN3).process(source)
    layout = QWEN3.layout(200, 120)
    item = mm.mm_items["image"][0]
    assert mm.mm_hashes["image"] == [sim.mm_hash] == [image_hash(decode_image(source))]
    assert item["pixel_values"].shape == sim.item.pixel_values.shape == layout.pixel_shape
    assert item["pixel_values"].dtype == np.float32
    assert item["image_grid_thw"].tolist() == [list(layout.grid_thw)]
    span = mm.mm_placeholders["image"][0]
    assert span.length == layout.tokens
    assert out.token_ids[span.offset : span.offset + span.length] == [IMAGE_PAD_TOKEN] * layout.tokens
    # both normalize qwen3-vl with the public processor's 0.5 / 0.5 (the preset's own statistics)
    assert np.abs(item["pixel_values"] - sim.item.pixel_values).max() < 1e-5


@pytest.mark.parametrize("model", ["qwen3-vl", "qwen2-vl"])
def test_each_presets_statistics_give_the_library_pixels_the_sims_within_float_rounding(
    tokenizer: object, model: str
) -> None:
    geometry = get_geometry(model)
    proc = parts.make_processor(geometry).image_processor
    assert (tuple(proc.image_mean), tuple(proc.image_std)) == (geometry.image_mean, geometry.image_std)
    source = make_source(SourceSpec(128, 128), 1, 0, 0)
    renderer = parts.make_renderer(tokenizer, parts.make_processor(geometry), 4)
    mm = renderer.render([_message(source)]).multi_modal_data
    assert mm is not None
    library = mm.mm_items["image"][0]["pixel_values"]
    sim = Renderer(geometry).process(source).item.pixel_values
    # the same pixels up to the order of float32 operations (rescale and normalize are fused apart)
    assert np.abs(library - sim).max() < 1e-5


def test_qwen2_preset_configures_patch_14_and_clip_statistics() -> None:
    proc = parts.make_processor(get_geometry("qwen2-vl")).image_processor
    assert (proc.patch_size, proc.merge_size, proc.temporal_patch_size) == (14, 2, 2)
    assert list(proc.image_mean) == [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's


def test_each_renderer_has_its_own_fifo_cache_bounded_by_image_cache_max(tokenizer: object) -> None:
    pool = parts.LibraryPool(QWEN3, pool_size=2, image_cache_max=1)
    a, b = (make_source(SourceSpec(64, 64, content="flat"), i, 0, 0) for i in range(2))
    first, second = pool.members
    first.render([_message(a)])
    assert len(parts.image_cache(first)) == 1 and not parts.image_cache(second)
    first.render([_message(b)])  # evicts a (FIFO, one entry)
    (only,) = parts.image_cache(first)
    assert only == image_hash(decode_image(b))
    assert len(list(pool.cached_items())) == 1


def test_hits_and_misses_of_a_render() -> None:
    assert parts.LibraryPool.count({"a"}, ["a", "b", "b", "c"]) == (2, 2)
    assert parts.LibraryPool.count(set(), []) == (0, 0)


def _library_sidecar(n: int) -> tuple[LibraryMM, MultiModalData]:
    grid = np.array([[1, 4, 4]])
    items = [{"pixel_values": np.full((16, 8), i, np.float32), "image_grid_thw": grid} for i in range(n)]
    hashes = [f"h{i}" for i in range(n)]
    mm = LibraryMM(
        {"image": hashes}, {"image": [PlaceholderRange(4 * i, 4) for i in range(n)]}, {"image": items}
    )
    view = MultiModalData(
        list(hashes),
        [Placeholder(4 * i, 4) for i in range(n)],
        [MMItem(grid, i, it["pixel_values"]) for i, it in enumerate(items)],
    )
    return mm, view


def test_full_stores_the_librarys_sidecar_as_returned() -> None:
    mm, view = _library_sidecar(3)
    transport = make_transport("full", 16)
    assert _stored(mm, transport.stored(view, [Ship.PIXELS] * 3)) is mm


def test_ephemeral_stores_descriptors_sharing_hashes_and_placeholders() -> None:
    mm, view = _library_sidecar(3)
    stored = _stored(mm, make_transport("ephemeral", 16).stored(view, [Ship.PIXELS] * 3))
    assert all("pixel_values" not in it for it in stored.mm_items["image"])
    assert [it["image_grid_thw"] for it in stored.mm_items["image"]] == [
        it["image_grid_thw"] for it in mm.mm_items["image"]
    ]
    assert stored.mm_hashes is mm.mm_hashes and stored.mm_placeholders is mm.mm_placeholders
    # the returned sidecar is not touched: the renderer's cache may still hold its pixels
    assert all("pixel_values" in it for it in mm.mm_items["image"])
    # a descriptor stays the same object turn to turn
    again = _stored(
        stored, make_transport("ephemeral", 16).stored(view.descriptors_only(), [Ship.PIXELS] * 3)
    )
    assert again is stored


def test_hash_only_strips_the_items_sent_as_null_slots() -> None:
    mm, view = _library_sidecar(3)
    stored = _stored(mm, make_transport("hash-only", 16).stored(view, [Ship.NULL, Ship.NULL, Ship.PIXELS]))
    items = stored.mm_items["image"]
    assert ["pixel_values" in it for it in items] == [False, False, True]
    assert items[2] is mm.mm_items["image"][2]


def test_renderer_parameters_are_validated_where_the_point_is_made() -> None:
    with pytest.raises(MmbenchError, match="unknown renderer 'vllm'; choose one of: sim, renderers"):
        PointConfig(renderer="vllm")
    with pytest.raises(MmbenchError, match="tokenizer is used by --renderer renderers only"):
        PointConfig(tokenizer="/x")
    with pytest.raises(MmbenchError, match="image_cache_max must be >= 1 with --renderer renderers"):
        PointConfig(renderer="renderers", image_cache_max=0)
    with pytest.raises(MmbenchError, match="bfloat16"):
        PointConfig(renderer="renderers", dtype="bfloat16")
    assert PointConfig(renderer="renderers", mode="raw-file").renderer == "renderers"


def test_the_library_rejects_a_cache_bound_of_zero_itself(tokenizer: object) -> None:
    """Why image_cache_max 0 is refused: renderers 0.1.12 evicts from an empty cache."""
    renderer = parts.make_renderer(tokenizer, parts.make_processor(QWEN3), 0)
    with pytest.raises(StopIteration):
        renderer.render([_message(make_source(SourceSpec(64, 64), 0, 0, 0))])


def test_a_missing_tokenizer_directory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    config = PointConfig(renderer="renderers", tokenizer=str(tmp_path / "nope"))
    with pytest.raises(MmbenchError, match=r"--tokenizer .*nope: no such directory"):
        backends.check_runnable(config)
    with pytest.raises(MmbenchError, match=r"no tokenizer\.json or tokenizer_config\.json"):
        backends.check_runnable(PointConfig(renderer="renderers", tokenizer=str(tmp_path)))


def test_without_the_library_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "missing_modules", lambda: ("renderers",))
    with pytest.raises(MmbenchError, match=r"renderers not installed.*pip install 'mmbench\[renderers\]'"):
        backends.check_runnable(PointConfig(renderer="renderers"))
    backends.check_runnable(PointConfig())  # the sim needs none of it


@pytest.mark.parametrize(
    ("model", "cls_name"),
    [("qwen3-vl", "Qwen3VLRenderer"), ("qwen3.5", "Qwen35Renderer"), ("qwen3.6", "Qwen36Renderer"),
     ("kimi-k2.5", "KimiK25Renderer")],
)  # fmt: skip
def test_each_preset_renders_with_the_librarys_class_and_matches_the_sim(model: str, cls_name: str) -> None:
    geo = get_geometry(model)
    renderer = parts.make_renderer(parts.build_tokenizer(model), parts.make_processor(geo), 4, model)
    assert type(renderer).__name__ == cls_name
    assert renderer.config.image_cache_max == 4
    source = make_source(SourceSpec(200, 120), 0, 0, 0)
    out = renderer.render([_message(source)], add_generation_prompt=True)
    mm = out.multi_modal_data
    assert mm is not None
    item = mm.mm_items["image"][0]
    sim = Renderer(geo).process(source)
    layout = geo.layout(200, 120)
    assert sorted(item) == sorted(["pixel_values", geo.grid_key])
    assert item["pixel_values"].shape == layout.pixel_shape == sim.item.pixel_values.shape
    assert np.asarray(item[geo.grid_key]).tolist() == [list(layout.grid_thw)]
    assert np.abs(item["pixel_values"] - sim.item.pixel_values).max() < 1e-5
    assert mm.mm_hashes["image"] == [sim.mm_hash]
    assert [p.length for p in mm.mm_placeholders["image"]] == [layout.placeholder_tokens]
    assert out.token_ids.count(IMAGE_PAD_TOKEN) == layout.placeholder_tokens  # Kimi: one <|media_pad|>


def test_the_kimi_processor_counts_the_models_tokens() -> None:
    from PIL import Image

    kimi = parts.make_processor(get_geometry("kimi-k2.5")).image_processor
    image = Image.new("RGB", (1024, 1024))
    assert kimi.media_tokens_calculator({"type": "image", "image": image}) == 1_369
    out = kimi.preprocess([{"type": "image", "image": image}], return_tensors="np")
    assert out["pixel_values"].shape == (5476, 3, 14, 14) and out["grid_thws"].tolist() == [[1, 74, 74]]
