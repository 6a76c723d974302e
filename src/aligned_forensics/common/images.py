"""Decoding and encoding images in one documented way, shared by every stage."""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # any case; animated → rejected
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # single-channel modes with more than 8 bits
PNG_COMPRESS_LEVEL = 1  # lossless at any level; 1 is the fast end
# Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS, ~89.5 Mpx) only warns up to twice this; we
# refuse anything above it before a pixel is decoded (a 1-bit PNG of that size is a few kB on disk).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# An object's repr such as `<_io.BytesIO object at 0x7f…>`: Pillow names the stream it could not read, and the
# address differs on every run.
_OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")


class ImageDecodeError(Exception):
    """An image file that cannot be decoded; the message is the reason written to rejects.csv."""


@contextlib.contextmanager
def open_image(source: Path | bytes) -> Iterator[Image.Image]:
    """Open one still image lazily (header only), refusing decompression bombs and animations first.

    Every Pillow failure inside the block (truncation, corrupt data) becomes an ImageDecodeError."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(_bomb_reason(width * height, f"{width}x{height} = "))
            if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":  # MPO: a camera JPEG + its previews
                raise ImageDecodeError(f"animated or multi-frame {image.format} ({image.n_frames} frames): only "
                                       "still images are used; save the frame you want as PNG")
            yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # Pillow's guard was first
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageDecodeError(_bomb_reason(int(pixels.group(1))) if pixels else
                               f"refused: {stable_message(error)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageDecodeError(f"{type(error).__name__}: {stable_message(error)}") from error


def stable_message(error: BaseException) -> str:
    """The error's text with object reprs (memory addresses) replaced by `<image data>`.

    Reasons go into rejects files, which must be byte-identical between runs of the same inputs: an address
    that changes every run would make DVC see a changed output and re-run every later stage."""
    return _OBJECT_REPR.sub("<image data>", str(error))


def _bomb_reason(pixels: int, prefix: str = "") -> str:
    return (f"{prefix}{pixels:,} pixels is over the limit of {MAX_PIXELS:,} pixels (a possible decompression "
            "bomb): refused without decoding")


def decode_rgb(source: Path | bytes) -> np.ndarray:
    """Decode a file (or its bytes) to an (H, W, 3) uint8 RGB array, the one way every stage does it.

    Refused (ImageDecodeError) before decoding: more than MAX_PIXELS pixels, or more than one frame (animated
    GIF/PNG/WebP, multi-page TIFF). EXIF orientation is applied first. Then: 16-bit and 32-bit grey levels are
    scaled to 8 bits (not clipped, as Pillow's own conversion would); grey, palette and CMYK are converted to
    RGB by Pillow; an alpha channel is dropped (the colour values are kept as stored, not composited)."""
    with open_image(source) as image:
        if image.getexif().get(0x0112, 1) != 1:  # only then: exif_transpose copies even when nothing turns
            image = ImageOps.exif_transpose(image)
        if image.mode in HIGH_DEPTH_MODES:
            image = Image.fromarray(_to_8_bits(np.asarray(image)))
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even RGB -> RGB
        return np.asarray(rgb, dtype=np.uint8)  # read-only view of one copy; writers copy first


def _to_8_bits(levels: np.ndarray) -> np.ndarray:
    """16-bit (or float 0..1) grey levels -> uint8, rounding to the nearest level."""
    if levels.dtype.kind == "f":
        return np.clip(np.round(levels * 255.0), 0, 255).astype(np.uint8)
    maximum = 65535.0 if levels.max(initial=0) > 255 or levels.dtype.itemsize > 1 else 255.0
    return np.clip(np.round(levels.astype(np.float64) * (255.0 / maximum)), 0, 255).astype(np.uint8)


def decode_or_error(path: Path) -> np.ndarray | ImageDecodeError:
    """decode_rgb, returning the error instead of raising (for batch loops that list rejects)."""
    try:
        return decode_rgb(path)
    except ImageDecodeError as error:
        return error


def decode_expected(path: Path, *, height: int, width: int) -> tuple[np.ndarray | None, str]:
    """(pixels, "") when the file decodes to the recorded size, else (None, reason to reject)."""
    pixels = decode_or_error(path)
    if isinstance(pixels, ImageDecodeError):
        return None, str(pixels)
    if pixels.shape[:2] != (height, width):
        return None, f"decoded size {pixels.shape[1]}x{pixels.shape[0]} differs from the recorded {width}x{height}"
    return pixels, ""


def image_header(path: Path, *, as_displayed: bool = False) -> tuple[int, int, str]:
    """Return (width, height, format) from the file header, without decoding pixels.

    as_displayed: the size decode_rgb returns (sides swapped when EXIF orientation turns the image).
    Decompression bombs and animations are refused here already, as in decode_rgb."""
    with open_image(path) as image:
        width, height = image.size
        if as_displayed and header_orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        return width, height, str(image.format or "unknown").lower()


def header_orientation(image: Image.Image) -> int:
    """EXIF orientation (1 = upright) without decoding pixels. A PNG's eXIf chunk is only seen when it
    comes before the image data (as the PNG spec asks): Pillow's getexif() would decode the whole PNG."""
    if image.format == "PNG":
        exif = image.info.get("exif")
        if not exif:
            return 1
        parsed = Image.Exif()
        parsed.load(exif)
        return int(parsed.get(0x0112, 1))
    return int(image.getexif().get(0x0112, 1))


def encode_jpeg(pixels: np.ndarray, *, quality: int) -> bytes:
    """Encode (H, W, 3) uint8 as baseline JPEG with 4:2:0 subsampling, like COCO's photos."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=2)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray, *, text: dict[str, str] | None = None) -> bytes:
    """Encode (H, W, 3) uint8 as lossless PNG with optional tEXt chunks (same pixels and text, same bytes).

    OpenCV's encoder at zlib level 1: about 7x faster than Pillow's default level 6 for ~15 % larger files
    (measured in bench/reconstruct.py), and it releases the GIL, so writer threads overlap the model."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels[..., ::-1]),  # RGB -> OpenCV's BGR
                               [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} {pixels.dtype} array as PNG")
    data = encoded.tobytes()
    chunks = b"".join(_png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
                      for key, value in (text or {}).items())
    end_of_header = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes of data, CRC
    return data[:end_of_header] + chunks + data[end_of_header:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG, read from its header without decoding pixels ({} if unreadable)."""
    try:
        with Image.open(path) as image:
            return dict(getattr(image, "text", {}))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return {}


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays of the same shape (inf if identical)."""
    error = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))
