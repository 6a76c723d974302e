"""Decoding and encoding images in one documented way, shared by every stage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PNG_COMPRESS_LEVEL = 1  # lossless either way; level 1 encodes ~5x faster than Pillow's default 6


class ImageDecodeError(Exception):
    """An image file that cannot be decoded; the message is the reason written to rejects.csv."""


def decode_rgb(path: Path) -> np.ndarray:
    """Decode a file to an (H, W, 3) uint8 RGB array: EXIF orientation applied, then converted to RGB."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            rgb = image.convert("RGB")  # grayscale/palette/CMYK/RGBA(alpha dropped) -> RGB
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{type(error).__name__}: {error}") from error


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


def image_header(path: Path) -> tuple[int, int, str]:
    """Return (width, height, format) from the file header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.width, image.height, str(image.format or "unknown").lower()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{type(error).__name__}: {error}") from error


def encode_jpeg(pixels: np.ndarray, *, quality: int) -> bytes:
    """Encode (H, W, 3) uint8 as baseline JPEG with 4:2:0 subsampling, like COCO's photos."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=2)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode (H, W, 3) uint8 as lossless PNG (deterministic bytes for the same pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays of the same shape (inf if identical)."""
    error = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else float(10.0 * np.log10(255.0**2 / error))
