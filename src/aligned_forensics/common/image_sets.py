"""Image sets: where validation and test images come from, in one vocabulary for every stage that scores.

`train.validation`, `threshold.validation`, `evaluate.test_sets` and `reference.test_sets` each name images by:
* `split` (test sets only) — a manifest split: its reals and their own reconstructions;
* `real` + `fake` — folders (searched recursively), globs, or archives (`.zip`, `.tar`, `.tar.gz`, `.tgz`,
  `.tar.bz2`, `.tar.xz`; a local path or an http(s) URL, optionally followed by a folder inside: `bench.zip/valid`);
* `root` — a benchmark folder (or archive) in either common layout, one set per generator (layouts.py).
Nothing set (validation only) means the manifest's paired `val` split.
"""

from __future__ import annotations

import glob
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aligned_forensics.common.archive_paths import locate
from aligned_forensics.common.compression import JpegCompression
from aligned_forensics.common.download import downloads_dir, parse_checksum
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import ImageDecodeError, decode_expected, image_header
from aligned_forensics.common.io import read_csv
from aligned_forensics.common.layouts import benchmark_layout, image_files
from aligned_forensics.common.params import require
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.splits import SPLITS


@dataclass(frozen=True)
class ScoreItem:
    path: str
    height: int  # known before decoding, so full images are batched by size without decoding twice
    width: int
    match: JpegCompression | None = None  # format-matched scoring re-encodes it with this; None: as delivered


@dataclass(frozen=True)
class ImageSource:
    """Unpaired images: real and fake folders / globs / archives, or a benchmark root (see the module doc)."""

    real: str = ""
    fake: str = ""
    root: str = ""  # a benchmark folder or archive: one set per generator folder
    real_folder: str = ""  # root only: the real folder(s), comma-separated ("" = exactly 0_real, real or reals)
    checksum: str = ""  # an archive given by URL: md5:<hex> | sha256:<hex> | "" (unverified, its sha256 logged)

    @property
    def unpaired(self) -> bool:
        return bool(self.real or self.fake or self.root)

    def paths(self) -> list[str]:
        """The folders, globs, archives or URLs this source reads (for watching and messages)."""
        return [text for text in (self.real, self.fake, self.root) if text]

    def check(self, key: str) -> None:
        """Range checks, reported under `key` (e.g. evaluate.test_sets[1]: the list index, as -S takes it)."""
        require(not (self.real or self.fake) or bool(self.real and self.fake), f"{key}.real/fake",
                "both real and fake (folders, globs or archives)", (self.real, self.fake))
        require(not (self.root and (self.real or self.fake)), f"{key}.root", "either root, or real and fake",
                (self.root, self.real, self.fake))
        require(not self.real_folder or bool(self.root), f"{key}.real_folder", "'' unless root is set",
                self.real_folder)
        parse_checksum(self.checksum, key=f"{key}.checksum")
        require(not self.checksum or any(p.startswith(("http://", "https://")) for p in self.paths()),
                f"{key}.checksum", "'' unless an archive is given by URL", self.checksum)


@dataclass(frozen=True)
class ValidationSet(ImageSource):
    """`train.validation` / `threshold.validation`: the manifest's val pairs unless real+fake or root is set."""


@dataclass(frozen=True)
class TestSet(ImageSource):
    """One `evaluate.test_sets` entry: a manifest split, real+fake, or a root that yields one set per generator."""

    __test__ = False  # not a pytest class, despite the name
    name: str = ""  # root: a prefix for the generator names ('' = the generator folder names alone)
    split: str = ""

    def check(self, key: str) -> None:
        super().check(key)
        require(bool(self.name) or bool(self.root), f"{key}.name", "a name (optional only with root)", self.name)
        require("/" not in self.name, f"{key}.name", "a name without '/'", self.name)
        require(bool(self.split) != self.unpaired, key, "exactly one of split, real+fake, root",
                (self.split, self.real, self.fake, self.root))
        require(not self.split or self.split in SPLITS, f"{key}.split", f"one of {', '.join(SPLITS)}", self.split)


@dataclass(frozen=True)
class ResolvedSet:
    """The images of one set, header-checked; unreadable files are rejects (path, stage, reason)."""

    name: str
    reals: list[ScoreItem]
    fakes: list[ScoreItem]
    rejects: list[dict[str, str]] = field(default_factory=list)
    paired: bool = False  # fakes[i] is the reconstruction of reals[i] (a manifest split)


def resolve_test_set(test_set: TestSet, *, manifest_dir: Path, cache: Path | None = None) -> list[ResolvedSet]:
    """The set(s) of one entry: one for a split or real+fake, one per generator for a root (archives are
    downloaded and unpacked into `cache`, default the download cache)."""
    if test_set.split:
        rows = read_csv(manifest_dir / f"{test_set.split}.csv")
        resolved = [ResolvedSet(test_set.name, _manifest_items(rows, "real_path"), _manifest_items(rows, "fake_path"),
                                paired=True)]
    else:
        resolved = [ResolvedSet(name, *_headers(reals, fakes, stage=f"evaluate:{name}"))
                    for name, reals, fakes in _unpaired_groups(test_set, cache=cache)]
    for item in resolved:
        _require_both_classes(item, where=test_set.split or test_set.root or f"{test_set.real} / {test_set.fake}")
    return resolved


def resolve_validation(source: ValidationSet, *, val_manifest: Path, cache: Path | None = None, stage: str
                       ) -> ResolvedSet:
    """Validation reals and fakes: the manifest's val pairs, or every generator of an unpaired source pooled."""
    if not source.unpaired:
        rows = read_csv(val_manifest)
        if not rows:
            raise DataError(f"{val_manifest} has no validation pairs")
        return ResolvedSet("validation", _manifest_items(rows, "real_path"), _manifest_items(rows, "fake_path"))
    groups = _unpaired_groups(source, cache=cache)
    reals = sorted({path for _, group_reals, _ in groups for path in group_reals})  # generators may share reals
    fakes = sorted({path for _, _, group_fakes in groups for path in group_fakes})
    resolved = ResolvedSet("validation", *_headers(reals, fakes, stage=stage))
    _require_both_classes(resolved, where=source.root or f"{source.real} / {source.fake}")
    return resolved


def _unpaired_groups(source: ImageSource, *, cache: Path | None) -> list[tuple[str, list[Path], list[Path]]]:
    """(name, real files, fake files) per set: one for real+fake, one per generator for a root."""
    if source.root:
        root = locate(source.root, checksum=source.checksum, cache=cache or downloads_dir())
        prefix = getattr(source, "name", "")
        return [(f"{prefix}-{name}" if prefix else name, reals, fakes)
                for name, reals, fakes in benchmark_layout(root, real_folder=source.real_folder)]
    return [(getattr(source, "name", ""), expand(source.real, checksum=source.checksum, cache=cache),
             expand(source.fake, checksum=source.checksum, cache=cache))]


def expand(pattern: str, *, checksum: str = "", cache: Path | None = None) -> list[Path]:
    """A folder (recursive, image extensions in any case), a glob or an archive (or a folder inside one), sorted."""
    path = locate(pattern, checksum=checksum, cache=cache or downloads_dir())
    if path.is_dir():
        return image_files(path)
    return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())


def resolve_items(paths: list[Path], *, stage: str) -> tuple[list[ScoreItem], list[dict[str, str]]]:
    """ScoreItems with their displayed sizes; files whose header cannot be read are rejects."""
    items, rejects = [], []
    for path in paths:
        try:
            width, height, _ = image_header(path, as_displayed=True)
        except ImageDecodeError as error:
            rejects.append({"path": str(path), "stage": stage, "reason": str(error)})
            continue
        items.append(ScoreItem(str(path), height, width))
    return items, rejects


def decodable(items: list[ScoreItem], *, stage: str) -> tuple[list[ScoreItem], list[dict[str, str]]]:
    """The items whose every pixel decodes at the size their header gave; the others as rejects (2 threads)."""
    def check(item: ScoreItem) -> str:
        return decode_expected(Path(item.path), height=item.height, width=item.width)[1]

    with ThreadPoolExecutor(2) as pool:
        reasons = list(progress_bar(pool.map(check, items), total=len(items), desc=f"{stage}: decode", unit="img"))
    rejects = [{"path": item.path, "stage": stage, "reason": reason} for item, reason in zip(items, reasons,
                                                                                              strict=True) if reason]
    return [item for item, reason in zip(items, reasons, strict=True) if not reason], rejects


def _headers(reals: list[Path], fakes: list[Path], *, stage: str
             ) -> tuple[list[ScoreItem], list[ScoreItem], list[dict[str, str]]]:
    real_items, real_rejects = resolve_items(reals, stage=stage)
    fake_items, fake_rejects = resolve_items(fakes, stage=stage)
    return real_items, fake_items, real_rejects + fake_rejects


def _manifest_items(rows: list[dict[str, str]], column: str) -> list[ScoreItem]:
    """One ScoreItem per manifest row for its real or fake image (sizes from the manifest: no header read)."""
    return [ScoreItem(row[column], int(row["height"]), int(row["width"])) for row in rows]


def _require_both_classes(resolved: ResolvedSet, *, where: str) -> None:
    for kind, items in (("real", resolved.reals), ("fake", resolved.fakes)):
        if not items:
            raise DataError(f"set '{resolved.name}' has no readable {kind} images (looked in {where!r}; "
                            f"{len(resolved.rejects)} file(s) rejected); every set needs both reals and fakes")
