"""A JPEG's compression read from one file and applied to other pixels (format alignment's building block)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aligned_forensics.common.compression import encode_like, read_compression
from aligned_forensics.common.images import decode_rgb


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("quality", "subsampling"), [(90, 2), (75, 0), (50, 1)])
def test_other_pixels_encoded_like_a_jpeg_get_its_tables_and_subsampling(quality: int, subsampling: int) -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    source = _jpeg(real, quality=quality, subsampling=subsampling)
    encoded = encode_like(other, read_compression(source))
    with Image.open(io.BytesIO(source)) as a, Image.open(io.BytesIO(encoded)) as b:
        assert a.quantization == b.quantization
        assert a.layer == b.layer  # (component id, horizontal, vertical sampling, table) per component
    assert decode_rgb(encoded).shape == other.shape
    assert encoded == encode_like(other, read_compression(source))  # same input, same bytes


def test_a_lossless_image_has_no_compression_to_match() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    assert read_compression(buffer.getvalue()) is None


def test_a_grey_jpeg_lends_its_luminance_table_to_every_channel() -> None:
    grey = _jpeg(np.full((16, 16), 128, np.uint8), quality=80)
    compression = read_compression(grey)
    assert compression.subsampling == 0 and compression.tables[0] == compression.tables[1]
    assert read_compression(encode_like(np.zeros((16, 16, 3), np.uint8), compression)) == compression
