"""Folders and archives outside the pipeline's outputs, made DVC dependencies: `<section>.watch: <path>`.

dvc.yaml lists `${<section>.watch}` among the stage's deps, so DVC hashes that folder (or file) itself and
`dvc status` shows the stage stale when one of its files changes. The default, `data/manifest`, is a dependency
of the stage already: nothing outside is read. A stage refuses to read an outside path its watch does not cover,
because DVC would then never notice it change.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from aligned_forensics.common.errors import ParamsError

log = logging.getLogger(__name__)

NOTHING_OUTSIDE = "data/manifest"  # the default watch: already every scoring stage's dependency


def check_watched(paths: Iterable[tuple[str, str, str]], *, watch: str, section: str) -> None:
    """Every (params key, path, checksum) a stage reads must lie in `<section>.watch`, else ParamsError.

    An archive URL pinned by a checksum needs no watch (the checksum is a param); an unpinned one is only
    logged, since DVC cannot hash a URL offline."""
    root = _absolute(watch)
    for key, text, checksum in paths:
        if text.startswith(("http://", "https://")):
            if not checksum:
                log.warning("%s: %s has no checksum, so a change on the server would go unnoticed; pin it with "
                            "%s.checksum: sha256:<hex> (its sha256 is logged when it downloads)", key, text, key)
            continue
        fixed = fixed_prefix(text)
        path = _absolute(fixed)
        if path != root and root not in path.parents:
            hint = f" (now {watch})" if watch != NOTHING_OUTSIDE else ""
            raise ParamsError(f"params key '{key}': {text} is outside the pipeline's outputs and not inside "
                              f"{section}.watch{hint}, so DVC would not re-run {section} when it changes; point "
                              f"the watch at it or at a folder holding all the outside images {section} reads, e.g. "
                              f"dvc exp run -S {section}.watch={fixed} (README \"Watched folders\")")


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
