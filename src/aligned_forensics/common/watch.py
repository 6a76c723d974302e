"""Folders and archives the pipeline does not write, made DVC dependencies: `<section>.watch: <path>`.

dvc.yaml lists `${<section>.watch}` among the stage's deps, so DVC hashes that folder (or file) itself and
`dvc status` shows the stage stale when one of its files is added, removed or changed. A watch inside the project
(the defaults: a path the stage depends on already) means nothing outside is read. A stage refuses to read an
outside path its watch does not cover, because DVC would then never notice it change. The pipeline's own image
folders (data/real, data/fake) need no watch in the stages after the manifest: it pins each image's sha256 and
is their dependency. DVC 3 cannot expand a list into a stage's deps (treeverse/dvc#8171), so each stage has one
watch: several outside folders are covered by a folder holding them all.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from aligned_forensics.common.errors import ParamsError

log = logging.getLogger(__name__)

NOTHING_OUTSIDE = "data/manifest"  # the scoring stages' default watch: already their dependency
PIPELINE_IMAGES = ("data/real", "data/fake")  # written by fetch and reconstruct, pinned image by image by the manifest


def check_watched(paths: Iterable[tuple[str, str, str]], *, watch: str, section: str,
                  pipeline_folders: tuple[str, ...] = PIPELINE_IMAGES) -> None:
    """Every (params key, path, checksum) a stage reads must lie in `<section>.watch` or in one of
    `pipeline_folders` (the pipeline's outputs the stage depends on through data/manifest), else ParamsError.

    An archive URL pinned by a checksum needs no watch (the checksum is a param); an unpinned one is only
    logged, since DVC cannot hash a URL offline."""
    root = _absolute(watch)
    covered = [root, *(_absolute(folder) for folder in pipeline_folders)]
    for key, text, checksum in paths:
        if text.startswith(("http://", "https://")):
            if not checksum:
                log.warning("%s: %s has no checksum, so a change on the server would go unnoticed; pin it with "
                            "%s.checksum: sha256:<hex> (its sha256 is logged when it downloads)", key, text, key)
            continue
        fixed = fixed_prefix(text)
        path = _absolute(fixed)
        if any(path == folder or folder in path.parents for folder in covered):
            continue
        hint = "" if _inside_project(root) else f" (now {watch})"
        written = f"not written by the pipeline ({', '.join(pipeline_folders)}) and " if pipeline_folders else ""
        raise ParamsError(f"params key '{key}': {text} is {written}not inside {section}.watch{hint}, so DVC would "
                          f"not re-run {section} when it changes; point the watch at it or at a folder holding all "
                          f"the outside inputs {section} reads, e.g. dvc exp run -S {section}.watch={fixed} "
                          f"(docs/watched-inputs.md)")


def _inside_project(path: Path) -> bool:
    """Whether a watch lies in the project (the stage's working directory): a default that watches nothing outside."""
    project = Path.cwd().resolve()
    return path == project or project in path.parents


def fixed_prefix(text: str) -> str:
    """The part of a path or glob before its first wildcard (what a watch must cover)."""
    fixed = list(_until_magic(Path(text).expanduser().parts))
    return str(Path(*fixed)) if fixed else "."


def _until_magic(parts: tuple[str, ...]) -> Iterator[str]:
    for part in parts:
        if glob.has_magic(part):
            return
        yield part


def _absolute(text: str) -> Path:
    return Path(text).expanduser().resolve()
