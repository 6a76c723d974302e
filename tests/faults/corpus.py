"""A corpus of awkward and hostile image files, generated in milliseconds, with the rule each must follow.

`CORPUS` maps a file name to (builder, rule); the rule is what the pipeline promises for that file:
  converted      decoded by images.decode_rgb's documented conversion and used like any photo
  fetch          rejected by the fetch stage (listed in data/fetch/rejects.csv with the reason)
  reconstruct    passes fetch (header only, bytes verbatim) and is rejected by the first full decode
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from aligned_forensics.common.images import encode_jpeg, encode_png


def pixels(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    """A smooth RGB test image (gradients plus noise), (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: what a decompression bomb looks like
    to anything that reads the header (a few dozen bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def png_bilevel_bomb(side: int = 10_000) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels (100 Mpx, just over Pillow's 89.5 Mpx limit
    where Pillow itself only warns): ~15 kB on disk, 100 MB once decoded."""
    row_bytes = (side + 7) // 8
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + row_bytes)  # filter byte 0, then the packed bits
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def gif_header_bomb(width: int = 65_535, height: int = 65_535) -> bytes:
    """A GIF whose logical screen and single frame claim 65535 x 65535 (4.3 Gpx), with almost no data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


def cmyk_jpeg() -> bytes:
    return _save(Image.fromarray(pixels(1)).convert("CMYK"), "JPEG", quality=90)


def grey16_png() -> bytes:
    levels = (pixels(2)[..., 0].astype(np.uint16) * 257)  # the full 16-bit range
    return _save(Image.fromarray(levels), "PNG")  # mode I;16


def rgb48_png() -> bytes:
    ok, data = cv2.imencode(".png", pixels(3).astype(np.uint16) * 257)
    assert ok
    return data.tobytes()


def grey_jpeg() -> bytes:
    return _save(Image.fromarray(pixels(4)).convert("L"), "JPEG", quality=90)


def palette_transparent_png() -> bytes:
    image = Image.fromarray(pixels(5)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    rgba = np.dstack([pixels(6), np.full((40, 48), 128, np.uint8)])
    return _save(Image.fromarray(rgba, "RGBA"), "PNG")


def exif_rotated_jpeg() -> bytes:
    """Stored 48 wide x 40 high, EXIF orientation 6: displayed 40 wide x 48 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(pixels(7)), "JPEG", quality=90, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.fromarray(pixels(8 + i)).convert("P") for i in range(3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


CONVERTED, FETCH, RECONSTRUCT = "converted", "fetch", "reconstruct"

CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty.jpg": (lambda: b"", FETCH),
    "text.jpg": (lambda: b"this is a text file named like a photo\n" * 3, FETCH),
    "truncated jpeg.jpg": (lambda: truncated(encode_jpeg(pixels(10, 64, 64), quality=90)), RECONSTRUCT),
    "truncated png.png": (lambda: truncated(encode_png(pixels(11, 64, 64))), RECONSTRUCT),
    "cmyk.jpg": (cmyk_jpeg, CONVERTED),
    "grey16.png": (grey16_png, CONVERTED),
    "rgb48.png": (rgb48_png, CONVERTED),
    "grey.jpg": (grey_jpeg, CONVERTED),
    "palette transparent.png": (palette_transparent_png, CONVERTED),
    "rgba.png": (rgba_png, CONVERTED),
    "rotated.jpg": (exif_rotated_jpeg, CONVERTED),
    "animated.gif": (animated_gif, FETCH),
    "bomb header.png": (lambda: png_header_only(20_000, 20_000), FETCH),  # 400 Mpx: over Pillow's hard limit
    "bomb bilevel.png": (png_bilevel_bomb, FETCH),  # 100 Mpx: where Pillow alone would only warn
    "bomb.gif": (gif_header_bomb, FETCH),
    "tiny.png": (lambda: encode_png(pixels(12, 5, 3)), FETCH),  # 3 x 5: under the 8-pixel minimum side
    "small.png": (lambda: encode_png(pixels(13, 12, 16)), CONVERTED),  # 16 x 12: smaller than the 32 crop
    "café au lait.jpg": (lambda: encode_jpeg(pixels(14), quality=90), CONVERTED),
    "北京.jpg": (lambda: encode_jpeg(pixels(15), quality=90), CONVERTED),
    "上海.jpg": (lambda: encode_jpeg(pixels(16), quality=90), CONVERTED),  # same ASCII-safe name as 北京
}


def write_corpus(folder: Path) -> dict[str, str]:
    """Write every corpus file into `folder`; return {file name: rule}."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (build, _) in CORPUS.items():
        (folder / name).write_bytes(build())
    return {name: rule for name, (_, rule) in CORPUS.items()}


def write_photos(folder: Path, count: int, *, seed: int = 100) -> list[Path]:
    """`count` ordinary JPEG photos (48 x 40), so that every split has pairs besides the corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo{i:02d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(encode_jpeg(pixels(seed + i), quality=90))
    return paths
