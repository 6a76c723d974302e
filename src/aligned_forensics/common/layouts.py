"""The two common folder layouts of detection benchmarks, each read as one (reals, fakes) set per generator.

* reals beside generators — `root/<real folder>/…` next to `root/<generator>/…` (the authors' benchmark release,
  DMimageDetection's test set with its several `real_*` folders, which are pooled);
* DMimageDetection's dataset structure, which the original training code reads — `root/<generator>/0_real/…`
  and `root/<generator>/1_fake/…`, each generator with reals of its own.
A folder is a real folder when its name is `real_folder`, or (when that is "") `0_real` or contains "real".
"""

from __future__ import annotations

import re
from pathlib import Path

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import IMAGE_EXTENSIONS


def is_real_folder(name: str, *, real_folder: str = "") -> bool:
    """Whether a folder holds reals: its name is `real_folder`, or by default `0_real` or contains 'real'."""
    return name == real_folder if real_folder else name == "0_real" or "real" in name.lower()


def benchmark_layout(root: Path, *, real_folder: str = "") -> list[tuple[str, list[Path], list[Path]]]:
    """(generator name, real files, fake files) per generator folder of `root`, sorted by name."""
    if not root.is_dir():
        raise DataError(f"benchmark root {root} is not a folder (or an archive holding one)")
    children = sorted(path for path in root.iterdir() if path.is_dir())
    real_dirs = [path for path in children if is_real_folder(path.name, real_folder=real_folder)]
    if real_dirs:  # reals beside generators: every other folder is one generator's fakes
        reals = sorted(file for folder in real_dirs for file in image_files(folder))
        sets = [(folder.name, reals, image_files(folder)) for folder in children if folder not in real_dirs]
    else:  # <generator>/0_real + <generator>/1_fake
        sets = [(folder.name, *_own_reals_and_fakes(folder, real_folder=real_folder)) for folder in children]
    if not sets:
        raise DataError(_layout_help(root, children, real_folder))
    for name, reals, fakes in sets:
        if not reals or not fakes:
            raise DataError(f"benchmark {root}: generator '{name}' has {len(reals)} real and {len(fakes)} fake "
                            f"images; every generator needs both (is a folder empty, or are the images not "
                            f"{', '.join(IMAGE_EXTENSIONS)}?)")
    return [(safe_set_name(name), reals, fakes) for name, reals, fakes in sets]


def safe_set_name(name: str) -> str:
    """A generator folder's name as a set name: letters, digits, '.', '_' and '-' (it names files and plots)."""
    return re.sub(r"[^\w.-]", "_", name)


def _own_reals_and_fakes(folder: Path, *, real_folder: str) -> tuple[list[Path], list[Path]]:
    """The reals and fakes of one `<generator>/{0_real,1_fake}` folder."""
    subfolders = sorted(path for path in folder.iterdir() if path.is_dir())
    real_dirs = [path for path in subfolders if is_real_folder(path.name, real_folder=real_folder)]
    fake_dirs = [path for path in subfolders if path not in real_dirs]
    if not real_dirs or not fake_dirs:
        raise DataError(f"benchmark folder {folder}: expected a real subfolder (0_real{_or(real_folder)}) and a "
                        f"fake one (e.g. 1_fake) inside each generator folder, found "
                        f"{[path.name for path in subfolders] or 'no subfolders'}")
    return (sorted(file for path in real_dirs for file in image_files(path)),
            sorted(file for path in fake_dirs for file in image_files(path)))


def image_files(folder: Path) -> list[Path]:
    """Every image below `folder` (recursive, extensions in any case), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _or(real_folder: str) -> str:
    return f" or {real_folder!r}" if real_folder else ", or a name containing 'real'"


def _layout_help(root: Path, children: list[Path], real_folder: str) -> str:
    return (f"benchmark root {root} has neither layout: expected a real folder (0_real{_or(real_folder)}) beside "
            "one folder per generator, or one folder per generator holding 0_real and 1_fake; found subfolders "
            f"{[path.name for path in children] or 'none'} (set real_folder to name the real folder)")
