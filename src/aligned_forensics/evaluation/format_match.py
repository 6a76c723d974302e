"""Format-matched scoring: every test set scored a second time with the file format's cue removed.

Reals stored as JPEG beside lossless fakes let a detector win by reading the file format instead of the
autoencoder's traces. The matched figures remove that cue, in memory, before the pixels reach the scorer:
* a paired set (a manifest split): each fake is re-encoded with its own real's JPEG compression (quantization
  tables, chroma subsampling) and decoded; reals are scored as they are. A fake that already is a JPEG with
  exactly its real's compression, or whose real is lossless, is scored as it is (never compressed twice).
* an unpaired set (real/fake folders, a root): reals and fakes alike are re-encoded as JPEG at one quality.
An item that already is a JPEG with exactly its target compression is scored as it is, its delivered score reused.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aligned_forensics.common.compression import JpegCompression, encode_like, read_compression
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.image_sets import ResolvedSet, ScoreItem
from aligned_forensics.common.images import ImageDecodeError, decode_rgb, encode_jpeg
from aligned_forensics.common.params import require
from aligned_forensics.detector.metrics import detection_metrics

log = logging.getLogger(__name__)

MATCHED_KEYS = ("ap", "auc", "bacc", "real_acc", "fake_acc")  # each recorded as <key>_matched
DECLARED_MATCHED = ("ap_matched", "auc_matched", "bacc_matched")  # beside ap, auc, bacc in the declared metrics


@dataclass(frozen=True)
class FormatMatch:
    """params.yaml `evaluate.format_match` / `reference.format_match`."""

    quality: int = 96  # unpaired sets: both classes re-encoded as JPEG at this quality (4:2:0), as DDA's QF 96

    def check(self, section: str) -> None:
        """Range checks, reported under `section`."""
        require(1 <= self.quality <= 100, f"{section}.quality", "a JPEG quality in 1..100", self.quality)


@dataclass(frozen=True)
class MatchedSet:
    """A set's items, each carrying the compression format-matched scoring re-encodes it with."""

    reals: list[ScoreItem]
    fakes: list[ScoreItem]
    unmatched: dict[str, str]  # path -> why it cannot be matched: left out of the matched figures only


@functools.lru_cache(maxsize=8)
def quality_compression(quality: int) -> JpegCompression:
    """The tables and subsampling (4:2:0) that Pillow's JPEG encoder uses at `quality`."""
    compression = read_compression(encode_jpeg(np.zeros((16, 16, 3), dtype=np.uint8), quality=quality))
    assert compression is not None  # a JPEG we just wrote
    return compression


def reencode(pixels: np.ndarray, compression: JpegCompression) -> np.ndarray:
    """(H, W, 3) uint8 -> the same, encoded as a JPEG with `compression` and decoded, as a scorer would read it."""
    return decode_rgb(encode_like(pixels, compression))


def plan_matching(resolved: ResolvedSet, *, quality: int) -> MatchedSet:
    """Each item of `resolved` with its `match` set: its real's compression (paired) or `quality`'s (unpaired)."""
    if not resolved.paired:
        target = quality_compression(quality)
        items = resolved.reals + resolved.fakes
        current = _compressions([item.path for item in items])
        matched = [replace(item, match=None if now == target else target) for item, now in zip(items, current,
                                                                                                strict=True)]
        return MatchedSet(matched[:len(resolved.reals)], matched[len(resolved.reals):], {})
    real_compressions = _compressions([item.path for item in resolved.reals], strict=True)
    fake_compressions = _compressions([item.path for item in resolved.fakes])
    fakes, unmatched = [], {}
    for real, fake, wanted, now in zip(resolved.reals, resolved.fakes, real_compressions, fake_compressions,
                                       strict=True):
        if isinstance(wanted, str):
            unmatched[fake.path] = f"its real {real.path} cannot be matched: {wanted}"
            fakes.append(fake)
        else:  # a lossless real (None) or an already matched fake: as delivered
            fakes.append(replace(fake, match=None if wanted is None or now == wanted else wanted))
    if unmatched:
        log.warning("%s: %d fake(s) left out of the matched figures, e.g. %s: %s", resolved.name, len(unmatched),
                    *next(iter(unmatched.items())))
    return MatchedSet(list(resolved.reals), fakes, unmatched)


def _compressions(paths: list[str], *, strict: bool = False) -> list[JpegCompression | None | str]:
    """Each file's JPEG compression (None: not a JPEG); with `strict` an unreadable one is its reason, else None.

    Headers only (2 threads); an unreadable file is rejected when its pixels are decoded for scoring."""
    def read(path: str) -> JpegCompression | None | str:
        try:
            return read_compression(Path(path))
        except ImageDecodeError as error:
            return str(error) if strict else None

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(read, paths))


def matched_metrics(labels: np.ndarray, matched: np.ndarray, *, threshold: float, where: str) -> dict[str, float]:
    """<key>_matched for MATCHED_KEYS, and the images they count, from format-matched scores (NaN: unmatched)."""
    kept = np.isfinite(matched)
    for label, kind in ((0, "real"), (1, "fake")):
        if not (labels[kept] == label).any():
            raise DataError(f"{where}: none of its {kind} images could be format-matched (their reals are "
                            "JPEGs of a kind that cannot be re-created, see the warning above); convert those reals "
                            "to PNG or to a YCbCr JPEG")
    metrics = detection_metrics(labels[kept], matched[kept], threshold=threshold)
    return ({f"{key}_matched": metrics[key] for key in MATCHED_KEYS}
            | {"n_real_matched": metrics["n_real"], "n_fake_matched": metrics["n_fake"]})

