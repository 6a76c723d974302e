"""A JPEG's compression (quantization tables, chroma subsampling), read from one file and applied to other pixels.

Format alignment rests on it: a fake written, or re-encoded for scoring, "like its real" differs from that real
only by the autoencoder, never by the file format a detector could learn instead.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

from aligned_forensics.common.images import ImageDecodeError, open_image

# Pillow's subsampling codes: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0 (get_sampling returns -1 for anything else)
SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


@dataclass(frozen=True)
class JpegCompression:
    """What decides a JPEG's pixels besides the image: its quantization tables and chroma subsampling."""

    tables: tuple[tuple[int, ...], ...]  # 64 coefficients each, in Pillow's (natural) order
    subsampling: int  # Pillow's code, see SUBSAMPLING_NAMES

    def describe(self) -> str:
        """e.g. `JPEG 4:2:0, 2 tables` (for logs and error messages)."""
        return f"JPEG {SUBSAMPLING_NAMES.get(self.subsampling, '?')}, {len(self.tables)} table(s)"


def read_compression(source: Path | bytes) -> JpegCompression | None:
    """The compression of a JPEG file (or its bytes); None when it is not a JPEG (lossless or another format)."""
    with open_image(source) as image:
        if image.format != "JPEG" and image.format != "MPO":
            return None
        tables = tuple(tuple(int(v) for v in image.quantization[key]) for key in sorted(image.quantization))
        subsampling = JpegImagePlugin.get_sampling(image)
        if image.mode == "L":  # one luminance table: its colour fake reuses it for chroma, nothing subsampled
            return JpegCompression(tables=tables * 2, subsampling=0)
        if subsampling not in SUBSAMPLING_NAMES or not tables:
            raise ImageDecodeError(f"a JPEG with a {image.mode} colour model or an unusual chroma sampling "
                                   "cannot be matched; convert it to PNG or to a YCbCr JPEG first")
        return JpegCompression(tables=tables, subsampling=subsampling)


def encode_like(pixels: np.ndarray, compression: JpegCompression, *, comment: bytes = b"") -> bytes:
    """Encode (H, W, 3) uint8 as a baseline JPEG with exactly these tables and subsampling (same input, same bytes).

    comment: written as a COM segment (read back as Pillow's `info["comment"]`); empty writes none."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, format="JPEG", qtables=[list(table) for table in compression.tables],
        subsampling=compression.subsampling, optimize=False, progressive=False,
        **({"comment": comment} if comment else {}))
    return buffer.getvalue()

