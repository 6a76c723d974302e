"""Stems pair each real with its fake (`<split>/<stem>.png`), so no two reals may share one: finding and
reporting every shared stem at once, so a user fixes them all in one pass instead of one per run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_LISTED = 20  # shared stems spelled out in a message; the rest are counted


def shared_stems(named: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Every stem given more than once, with all its images (paths or origins), in the order given."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for stem, name in named:
        by_stem[stem].append(name)
    return {stem: names for stem, names in by_stem.items() if len(names) > 1}


def shared_stems_message(shared: dict[str, list[str]], *, fix: str,
                         advice: Callable[[list[str]], str] | None = None) -> str:
    """One line per shared stem (the first MAX_LISTED, then a count of the rest), each with `advice` when it has
    any, then `fix`."""
    lines = []
    for stem, names in list(shared.items())[:MAX_LISTED]:
        who = "two reals" if len(names) == 2 else f"{len(names)} reals"
        listed = f"{', '.join(names[:-1])} and {names[-1]}"
        line_advice = advice(names) if advice else ""
        lines.append(f"  {who} share the stem '{stem}': {listed}" + (f"; {line_advice}" if line_advice else ""))
    if len(shared) > MAX_LISTED:
        lines.append(f"  ... and {len(shared) - MAX_LISTED:,} more shared stem(s)")
    return (f"{len(shared):,} stem(s) are shared by more than one real image (stems pair reals with fakes, so "
            "they must be unique):\n" + "\n".join(lines) + f"\n{fix}")


def rename_advice(names: list[str]) -> str:
    """For local files (a folder source): keep the first, rename (or remove) each other one, to a free stem.
    Nothing ('') for images that are not local files (archive members, crops): only a `prefix` can fix those."""
    paths = [Path(name) for name in names]
    if not all(path.is_file() for path in paths):
        return ""
    folders = {path.parent for path in paths}  # a new name must not collide with a file already there
    taken = {(other.parent, other.stem) for folder in folders for other in folder.iterdir()}
    renames = []
    for path in paths[1:]:
        number = 2
        while (path.parent, f"{path.stem}_{number}") in taken:
            number += 1
        taken.add((path.parent, f"{path.stem}_{number}"))
        renames.append(f"{path} to {path.stem}_{number}{path.suffix}")
    return f"keep {paths[0].name}, rename (or remove) " + ", ".join(renames)
