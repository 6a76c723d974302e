"""Odd image modes become RGB in one documented way (the same for the real that is trained on)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from aligned_forensics.common.images import ImageDecodeError, decode_rgb, image_header

GREY = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)  # (4, 6)


def encoded(image: Image.Image, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def test_grey_is_copied_to_three_channels():
    assert np.array_equal(decode_rgb(encoded(Image.fromarray(GREY))), np.repeat(GREY[..., None], 3, axis=2))


def test_sixteen_bit_grey_is_scaled_not_clipped():
    deep = Image.fromarray(GREY.astype(np.uint16) * 257)  # the same levels, 16 bits deep
    assert deep.mode.startswith("I;16")
    assert np.array_equal(decode_rgb(encoded(deep))[..., 0], GREY)


def test_palette_alpha_and_cmyk():
    rgb = np.stack([GREY, 255 - GREY, GREY // 2], axis=-1)  # (4, 6, 3)
    palette = Image.fromarray(rgb).quantize(colors=256, dither=Image.Dither.NONE)
    assert np.array_equal(decode_rgb(encoded(palette)), np.asarray(palette.convert("RGB")))
    rgba = np.concatenate([rgb, np.full((4, 6, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(decode_rgb(encoded(Image.fromarray(rgba))), rgb)  # alpha dropped, colours kept
    cmyk = Image.fromarray(rgb).convert("CMYK")
    assert np.array_equal(decode_rgb(encoded(cmyk, "TIFF")), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    rgb = np.stack([GREY, GREY, GREY], axis=-1)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_rgb(encoded(Image.fromarray(rgb), "JPEG", quality=100, exif=exif))
    assert decoded.shape == ((4, 6, 3) if orientation == 3 else (6, 4, 3))


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n"])
def test_the_reason_for_undecodable_bytes_holds_no_memory_address(data):
    """Reasons are written to rejects files: the same bytes must give the same text in every run."""
    reasons = []
    for _ in range(2):
        with pytest.raises(ImageDecodeError) as error:
            decode_rgb(bytes(data))  # a new bytes object (and BytesIO) each time: another address
        reasons.append(str(error.value))
    assert reasons[0] == reasons[1] and "0x" not in reasons[0] and " at " not in reasons[0], reasons
    assert reasons[0].startswith(("UnidentifiedImageError: cannot identify image file", "SyntaxError", "OSError"))


def test_the_reason_for_an_undecodable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match=r"UnidentifiedImageError: cannot identify image file .*broken.jpg"):
        image_header(path)
