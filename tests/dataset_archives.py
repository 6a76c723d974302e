"""Archives in the official COCO and LSUN formats, built by the tests from small real images."""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image


def photo(seed: int, *, width: int, height: int, image_format: str = "JPEG") -> bytes:
    """A small smooth 'photo' (gradients plus noise) encoded as JPEG or WebP."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, quality=75)
    return buffer.getvalue()


def coco_zip(folder: str, images: dict[str, bytes], *, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like train2017.zip: `<folder>/<name>` members, stored (JPEGs do not compress)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/", b"")
        for name, data in sorted(images.items()):
            archive.writestr(f"{folder}/{name}", data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def coco_images(count: int, *, width: int = 40, height: int = 32) -> dict[str, bytes]:
    """`count` COCO-named JPEGs ({id:012d}.jpg)."""
    return {f"{i:012d}.jpg": photo(i, width=width, height=height) for i in range(1, count + 1)}


def lsun_zip(category: str, split: str, values: dict[str, bytes]) -> bytes:
    """A zip laid out like `<category>_<split>_lmdb.zip`: an LMDB of key -> encoded image bytes."""
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / f"{category}_{split}_lmdb"
        with lmdb.open(str(folder), map_size=1 << 26) as database, database.begin(write=True) as transaction:
            for key, data in values.items():
                transaction.put(key.encode("ascii"), data)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in ("data.mdb", "lock.mdb"):
                archive.write(folder / name, f"{folder.name}/{name}")
        return buffer.getvalue()


def lsun_images(count: int, *, image_format: str = "WEBP") -> dict[str, bytes]:
    """`count` LSUN-like images (short side 32, the long side not a multiple of 8) keyed by a sha1 hex id."""
    return {hashlib.sha1(str(i).encode()).hexdigest(): photo(i, width=45 + i % 7, height=32,
                                                             image_format=image_format) for i in range(count)}


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()
