"""Test sets: a manifest split (reals and their reconstructions) or any real/fake folders or globs.

The paper's benchmark release and DMimageDetection's test set are folders of reals and folders of fakes per
generator; each becomes one `{name, real, fake}` entry (e.g. `real: bench/real/*.png`, `fake: bench/sd/`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import IMAGE_EXTENSIONS, ImageDecodeError, image_header
from aligned_forensics.common.io import read_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.splits import SPLITS
from aligned_forensics.evaluation.scoring import ScoreItem


@dataclass(frozen=True)
class TestSet:
    """One `evaluate.test_sets` entry."""

    __test__ = False  # not a pytest class, despite the name
    name: str
    split: str = ""  # a manifest split (e.g. test): its reals and their reconstructions
    real: str = ""  # or a folder (searched recursively) or a glob of real images
    fake: str = ""  # and a folder or glob of fakes

    def check(self, key: str) -> None:
        """Range checks, reported under `key` (e.g. evaluate.test_sets[1]: the list index, as -S takes it)."""
        require(bool(self.name) and "/" not in self.name, f"{key}.name", "a name without '/'", self.name)
        require(bool(self.split) != bool(self.real or self.fake), key, "either split, or real and fake",
                (self.split, self.real, self.fake))
        require(not self.split or self.split in SPLITS, f"{key}.split", f"one of {', '.join(SPLITS)}", self.split)


def resolve_test_set(test_set: TestSet, *, manifest_dir: Path) -> tuple[list[ScoreItem], list[ScoreItem],
                                                                       list[dict[str, str]]]:
    """(reals, fakes, rejects) of one set; files that are not readable images are rejects."""
    if test_set.split:
        rows = read_csv(manifest_dir / f"{test_set.split}.csv")
        reals = [ScoreItem(row["real_path"], int(row["height"]), int(row["width"])) for row in rows]
        fakes = [ScoreItem(row["fake_path"], int(row["height"]), int(row["width"])) for row in rows]
        rejects: list[dict[str, str]] = []
    else:
        real_paths, fake_paths = expand(test_set.real), expand(test_set.fake)
        reals, real_rejects = resolve_items(real_paths, stage=reject_stage(test_set))
        fakes, fake_rejects = resolve_items(fake_paths, stage=reject_stage(test_set))
        rejects = real_rejects + fake_rejects
    for kind, items, where in (("real", reals, test_set.real or test_set.split),
                               ("fake", fakes, test_set.fake or test_set.split)):
        if not items:
            raise DataError(f"test set '{test_set.name}' has no {kind} images (looked in {where!r}); every set "
                            "needs both reals and fakes")
    return reals, fakes, rejects


def reject_stage(test_set: TestSet) -> str:
    """The `stage` column of a test set's rejects, whether its header or its pixels could not be read."""
    return f"evaluate:{test_set.name}"


def expand(pattern: str) -> list[Path]:
    """A folder (recursive, image extensions in any case) or a glob, sorted."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
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
