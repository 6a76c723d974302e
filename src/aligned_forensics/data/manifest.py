"""The manifest stage: pair each real with its reconstruction by stem, one sorted CSV per split.

A fake is <stem>.png, or <stem>.jpg when reconstruct.format is match; real_format and fake_format record both.

Each row pins the sha256 of both files, so the manifest changes whenever an image it lists changes: later stages
depend on data/manifest alone (dvc.yaml) and still re-run exactly when their images change.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import ImageDecodeError, decode_rgb, image_header
from aligned_forensics.common.io import file_sha256, read_csv, write_csv
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.splits import SPLITS

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("stem", "real_path", "fake_path", "width", "height", "real_format", "fake_format", "source",
                    "real_source_format", "real_sha256", "fake_sha256")
REJECT_COLUMNS = ("path", "stage", "reason")
FAKE_SUFFIXES = (".png", ".jpg")  # what the reconstruct stage writes (autoencoder/reconstruct.py)


@dataclass(frozen=True)
class ManifestConfig:
    """params.yaml `manifest`."""

    verify_decode: bool = True  # decode every pixel of both images (catches truncated files), not just headers


def pair_by_stem(
    reals: Mapping[str, Path], fakes: Mapping[str, Path], *, fake_dir: Path
) -> list[tuple[str, Path, Path]]:
    """Return (stem, real, fake) sorted by stem; a real or fake without its partner raises DataError."""
    missing = sorted(set(reals) - set(fakes))
    if missing:
        stem = missing[0]
        raise DataError(f"{len(missing):,} real image(s) have no reconstruction, e.g. {reals[stem]} has no "
                        f"{fake_dir / (stem + '.png')} (nor .jpg); re-run `dvc repro reconstruct`")
    orphans = sorted(set(fakes) - set(reals))
    if orphans:
        stem = orphans[0]
        raise DataError(f"{len(orphans):,} reconstruction(s) have no real image, e.g. {fakes[stem]} has no real "
                        f"with stem '{stem}' in the fetch index; re-run `dvc repro fetch reconstruct`")
    return [(stem, Path(reals[stem]), Path(fakes[stem])) for stem in sorted(reals)]


def find_fakes(split_dir: Path) -> dict[str, Path]:
    """stem -> fake in one split's folder; DataError when a stem has both a .png and a .jpg fake."""
    found: dict[str, list[Path]] = {}
    for path in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
        if path.suffix in FAKE_SUFFIXES and path.is_file():
            found.setdefault(path.stem, []).append(path)
    doubles = sorted(paths for paths in found.values() if len(paths) > 1)
    if doubles:
        raise DataError(f"{len(doubles):,} stem(s) have two fakes, e.g. {doubles[0][0]} and {doubles[0][1]}: left "
                        "over from a run with another reconstruct.format; re-run `dvc repro reconstruct`, which "
                        "removes the one not wanted")
    return {stem: paths[0] for stem, paths in found.items()}


def check_pair(real: Path, fake: Path, *, verify_decode: bool) -> tuple[dict[str, Any], str | None]:
    """Read both headers (and pixels if asked); return (facts, reason to reject or None)."""
    try:
        real_width, real_height, real_format = image_header(real, as_displayed=True)  # EXIF-rotated: as decoded
        fake_width, fake_height, fake_format = image_header(fake, as_displayed=True)
        if verify_decode:
            decode_rgb(real)
            decode_rgb(fake)
    except ImageDecodeError as error:
        return {}, str(error)
    facts = {"width": real_width, "height": real_height, "real_format": real_format, "fake_format": fake_format,
             "real_sha256": file_sha256(real), "fake_sha256": file_sha256(fake)}
    if (real_width, real_height) != (fake_width, fake_height):
        return facts, f"size mismatch: real {real_width}x{real_height}, fake {fake_width}x{fake_height} ({fake})"
    return facts, None


def build_manifest(
    config: ManifestConfig, *, index_path: Path, fake_dir: Path, upstream_rejects: list[Path]
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, str]]]:
    """Pair every split; return (rows per split, rejected pairs)."""
    index = read_csv(index_path)
    rejected_upstream = {row["path"] for path in upstream_rejects if path.is_file() for row in read_csv(path)}
    rows: dict[str, list[dict[str, Any]]] = {}
    rejects: list[dict[str, str]] = []
    for split in SPLITS:
        entries = {row["stem"]: row for row in index if row["split"] == split and row["path"] not in rejected_upstream}
        split_dir = fake_dir / split
        fakes = find_fakes(split_dir)
        pairs = pair_by_stem({stem: Path(row["path"]) for stem, row in entries.items()}, fakes, fake_dir=split_dir)
        rows[split] = []
        for stem, real, fake in progress_bar(pairs, desc=f"manifest {split}", unit="pair"):
            facts, reason = check_pair(real, fake, verify_decode=config.verify_decode)
            if reason:
                rejects.append({"path": real.as_posix(), "stage": "manifest", "reason": reason})
                continue
            rows[split].append({"stem": stem, "real_path": real.as_posix(), "fake_path": fake.as_posix(),
                                "source": entries[stem]["source"], **facts,
                                # the compression history of the real (LSUN: webp even when cropped to PNG)
                                "real_source_format": entries[stem].get("source_format") or facts["real_format"]})
    return rows, rejects


def write_manifest(
    rows: dict[str, list[dict[str, Any]]], rejects: list[dict[str, str]], out_dir: Path
) -> dict[str, Any]:
    """Write <split>.csv and rejects.csv; return counts for metrics."""
    for split, split_rows in rows.items():
        write_csv(out_dir / f"{split}.csv", split_rows, MANIFEST_COLUMNS)
    write_csv(out_dir / "rejects.csv", rejects, REJECT_COLUMNS)
    all_rows = [row for split_rows in rows.values() for row in split_rows]
    formats = Counter(f"{row['real_source_format']}->{row['fake_format']}" for row in all_rows)
    if any(real != fake for real, fake in (key.split("->") for key in formats)):
        log.warning("real and fake file formats differ (%s): a format shortcut a detector can learn; "
                    "JPEG augmentation in training only partly hides it", dict(formats))
    if not rows["train"] or not rows["val"]:
        raise DataError(f"the manifest needs train and val pairs, got {len(rows['train'])} and {len(rows['val'])}")
    return {"rejected": len(rejects), **{f"pairs_{split}": len(split_rows) for split, split_rows in rows.items()},
            "formats": dict(sorted(formats.items()))}
