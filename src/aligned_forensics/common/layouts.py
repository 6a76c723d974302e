"""The two common folder layouts of detection benchmarks, each read as one (reals, fakes) set per generator.

* reals beside generators — `root/<real folder>/…` next to `root/<generator>/…` (the authors' benchmark release,
  DMimageDetection's test set with its several `real_*` folders, named together in `real_folder`);
* DMimageDetection's dataset structure, which the original training code reads — `root/<generator>/0_real/…`
  and `root/<generator>/1_fake/…`, each generator with reals of its own.
Reals are named, never guessed: a folder is real when `real_folder` names it (several: comma-separated), or, when
that is "", when its name is exactly one of REAL_NAMES. A name that merely contains "real" (`RealVisXL`,
`dreamlike-photoreal-2.0`) is a generator. A root with several such folders, or none, stops and says which
`real_folder` resolves it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

REAL_NAMES = ("0_real", "real", "reals")  # the names taken for reals without `real_folder`, compared exactly


def real_folder_names(real_folder: str) -> tuple[str, ...]:
    """`real_folder` as the names it gives ('a,b' names two folders, pooled); () when it is ''."""
    return tuple(name.strip() for name in real_folder.split(",") if name.strip())


def is_real_folder(name: str, *, real_folder: str = "") -> bool:
    """Whether a folder holds reals: `real_folder` names it, or (when that is '') its name is one of REAL_NAMES."""
    return name in (real_folder_names(real_folder) or REAL_NAMES)


def benchmark_layout(root: Path, *, real_folder: str = "",
                     key: str = "real_folder") -> list[tuple[str, list[Path], list[Path]]]:
    """(generator name, real files, fake files) per generator folder of `root`, sorted by name.

    `key` is the params key of `real_folder` (e.g. evaluate.test_sets[1].real_folder), for the errors' fix."""
    if not root.is_dir():
        raise DataError(f"benchmark root {root} is not a folder (or an archive holding one)")
    children = sorted(path for path in root.iterdir() if path.is_dir())
    real_dirs = _real_folders(root, children, real_folder=real_folder, key=key)
    if real_dirs:  # reals beside generators: every other folder is one generator's fakes
        reals = sorted(file for folder in real_dirs for file in image_files(folder))
        sets = [(folder.name, reals, image_files(folder)) for folder in children if folder not in real_dirs]
        for name in (name for name, _, _ in sets if "real" in name.lower()):
            log.warning("benchmark %s: '%s' is scored as a generator (fakes): its name contains 'real' but is not "
                        "a real folder; if it holds reals, name it in %s", root, name, key)
    else:  # <generator>/0_real + <generator>/1_fake
        sets = [(folder.name, *_own_reals_and_fakes(folder, real_folder=real_folder, key=key))
                for folder in children]
    if not sets:
        raise DataError(_layout_help(root, children, real_folder))
    for name, reals, fakes in sets:
        if not reals or not fakes:
            raise DataError(f"benchmark {root}: generator '{name}' has {len(reals)} real and {len(fakes)} fake "
                            f"images; every generator needs both (is a folder empty, or are the images not "
                            f"{', '.join(IMAGE_EXTENSIONS)}?)")
    return [(safe_set_name(name), reals, fakes) for name, reals, fakes in sets]


def _real_folders(root: Path, children: list[Path], *, real_folder: str, key: str) -> list[Path]:
    """The real folders beside the generators; [] for the <generator>/0_real layout; DataError when ambiguous."""
    names = [path.name for path in children]
    real_dirs = [path for path in children if is_real_folder(path.name, real_folder=real_folder)]
    if real_folder_names(real_folder):
        missing = [name for name in real_folder_names(real_folder) if name not in names]
        if real_dirs and missing:
            raise DataError(f"benchmark root {root}: {key} names {missing}, which is not a folder there; found "
                            f"{names}")
        if real_dirs or _nested_layout(children, real_folder=real_folder):
            return real_dirs
    elif len(real_dirs) > 1:
        raise DataError(f"benchmark root {root} has several real folders {[path.name for path in real_dirs]}: "
                        f"name the one that holds reals (or several, comma-separated, to pool them), e.g. "
                        f"-S '…{key}={real_dirs[0].name}'")
    elif real_dirs or _nested_layout(children, real_folder=real_folder):
        return real_dirs
    candidates = [name for name in names if "real" in name.lower()]
    example = ",".join(candidates) or (names[0] if names else "real")
    raise DataError(f"benchmark root {root} has no real folder: none of {names or 'no subfolders'} is "
                    f"{_expected(real_folder)}, and not every folder holds one (the <generator>/0_real layout). "
                    f"A name that merely contains 'real' is a generator; name the real folder(s), comma-separated "
                    f"to pool them, e.g. -S '…{key}={example}'")


def _nested_layout(children: list[Path], *, real_folder: str) -> bool:
    """Whether every folder has a real subfolder (DMimageDetection's `<generator>/0_real`)."""
    return bool(children) and all(any(is_real_folder(sub.name, real_folder=real_folder)
                                      for sub in folder.iterdir() if sub.is_dir()) for folder in children)


def _expected(real_folder: str) -> str:
    """The real folder names looked for, for messages."""
    return " or ".join(real_folder_names(real_folder) or REAL_NAMES)


def safe_set_name(name: str) -> str:
    """A generator folder's name as a set name: letters, digits, '.', '_' and '-' (it names files and plots)."""
    return re.sub(r"[^\w.-]", "_", name)


def _own_reals_and_fakes(folder: Path, *, real_folder: str, key: str) -> tuple[list[Path], list[Path]]:
    """The reals and fakes of one `<generator>/{0_real,1_fake}` folder."""
    subfolders = sorted(path for path in folder.iterdir() if path.is_dir())
    real_dirs = [path for path in subfolders if is_real_folder(path.name, real_folder=real_folder)]
    fake_dirs = [path for path in subfolders if path not in real_dirs]
    if len(real_dirs) > 1 and not real_folder:
        raise DataError(f"benchmark folder {folder} has several real subfolders {[path.name for path in real_dirs]}:"
                        f" name the one that holds reals, e.g. -S '…{key}={real_dirs[0].name}'")
    if not real_dirs or not fake_dirs:
        raise DataError(f"benchmark folder {folder}: expected a real subfolder ({_expected(real_folder)}) and a "
                        f"fake one (e.g. 1_fake) inside each generator folder, found "
                        f"{[path.name for path in subfolders] or 'no subfolders'}")
    return (sorted(file for path in real_dirs for file in image_files(path)),
            sorted(file for path in fake_dirs for file in image_files(path)))


def image_files(folder: Path) -> list[Path]:
    """Every image below `folder` (recursive, extensions in any case), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _layout_help(root: Path, children: list[Path], real_folder: str) -> str:
    return (f"benchmark root {root} has neither layout: expected a real folder ({_expected(real_folder)}) beside "
            "one folder per generator, or one folder per generator holding 0_real and 1_fake; found subfolders "
            f"{[path.name for path in children] or 'none'} (set real_folder to name the real folder)")
