"""mmbench.world.images: deterministic, distinct, decodable source images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmbench.errors import MmbenchError
from mmbench.world.images import CONTENTS, IMAGE_FORMATS, SourceSpec, make_source

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert("RGB")


def pixels(data: bytes) -> bytes:
    return np.asarray(decode(data)).tobytes()


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_deterministic(fmt: str, content: str) -> None:
    spec = SourceSpec(24, 16, fmt=fmt, content=content, seed=5)
    first = make_source(spec, 3, 2, 1)
    again = make_source(SourceSpec(24, 16, fmt=fmt, content=content, seed=5), 3, 2, 1)
    assert isinstance(first, bytes)
    assert first == again
    assert pixels(first) == pixels(again)


@pytest.mark.parametrize("content", CONTENTS)
def test_distinct_across_each_coordinate_and_seed(content: str) -> None:
    spec = SourceSpec(16, 12, fmt="png", content=content, seed=0)
    base = pixels(make_source(spec, 1, 1, 1))
    variants = {
        "rollout": pixels(make_source(spec, 2, 1, 1)),
        "turn": pixels(make_source(spec, 1, 2, 1)),
        "index": pixels(make_source(spec, 1, 1, 2)),
        "seed": pixels(make_source(SourceSpec(16, 12, "png", content, seed=1), 1, 1, 1)),
        # Coordinates beyond one byte of the stamp must still differ.
        "rollout+256": pixels(make_source(spec, 257, 1, 1)),
        "turn+256": pixels(make_source(spec, 1, 257, 1)),
        "index+256": pixels(make_source(spec, 1, 1, 257)),
        "seed+256": pixels(make_source(SourceSpec(16, 12, "png", content, seed=256), 1, 1, 1)),
    }
    for name, other in variants.items():
        assert other != base, f"{content}: changing {name} gave the same pixels"
    # And all pairwise distinct.
    everything = [base, *variants.values()]
    assert len(set(everything)) == len(everything)


def test_swapped_coordinates_are_distinct() -> None:
    spec = SourceSpec(8, 8, content="flat")
    seen = {
        pixels(make_source(spec, r, t, i))
        for r, t, i in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    }
    assert len(seen) == 6


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
@pytest.mark.parametrize(("width", "height"), [(32, 32), (40, 17), (7, 50)])
def test_decodes_to_requested_size(fmt: str, width: int, height: int) -> None:
    for content in CONTENTS:
        image = decode(make_source(SourceSpec(width, height, fmt, content), 0, 0, 0))
        assert image.size == (width, height)
        assert image.mode == "RGB"
        assert np.asarray(image).shape == (height, width, 3)


def test_format_magic_bytes() -> None:
    png = make_source(SourceSpec(20, 10, fmt="png"), 0, 0, 0)
    jpeg = make_source(SourceSpec(20, 10, fmt="jpeg"), 0, 0, 0)
    assert png.startswith(PNG_MAGIC)
    assert not png.startswith(JPEG_MAGIC)
    assert jpeg.startswith(JPEG_MAGIC)
    assert jpeg.endswith(b"\xff\xd9")
    with Image.open(io.BytesIO(png)) as a, Image.open(io.BytesIO(jpeg)) as b:
        assert a.format == "PNG"
        assert b.format == "JPEG"


def test_png_is_lossless_flat_colour() -> None:
    # A flat source is one colour except the two stamped corner pixels.
    arr = np.asarray(decode(make_source(SourceSpec(10, 6, content="flat", seed=3), 4, 5, 6)))
    body = arr[1:]
    assert (body == body[0, 0]).all()
    assert tuple(arr[0, 0]) == (4, 5, 6)
    assert tuple(arr[0, -1]) == (0, 0, 3)


def test_encoded_size_ordering_png_256() -> None:
    sizes = {content: len(make_source(SourceSpec(256, 256, "png", content), 0, 0, 0)) for content in CONTENTS}
    assert sizes["noise"] > sizes["photo"] > sizes["flat"]
    raw = 256 * 256 * 3
    assert sizes["noise"] >= raw  # noise does not compress
    assert sizes["flat"] < raw // 20


@pytest.mark.parametrize("fmt", ["gif", "PNG", "jpg", ""])
def test_unknown_format(fmt: str) -> None:
    with pytest.raises(MmbenchError) as info:
        SourceSpec(8, 8, fmt=fmt)
    message = str(info.value)
    assert repr(fmt) in message
    for name in IMAGE_FORMATS:
        assert name in message


@pytest.mark.parametrize("content", ["gradient", "Photo", ""])
def test_unknown_content(content: str) -> None:
    with pytest.raises(MmbenchError) as info:
        SourceSpec(8, 8, content=content)
    message = str(info.value)
    assert repr(content) in message
    for name in CONTENTS:
        assert name in message
