"""Rejects files are deterministic: re-running fetch on the same undecodable inputs writes the same bytes, so
the real `dvc` sees no changed output and no later stage turns stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aligned_forensics.common.images import IMAGE_EXTENSIONS
from aligned_forensics.common.io import read_csv
from tests.conftest import TINY_PARAMS
from tests.faults.corpus import write_corpus, write_photos
from tests.projects import make_project, run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]


def rejects_files(project: Path) -> dict[str, bytes]:
    """Every rejects file the stages wrote, by path."""
    return {path.relative_to(project).as_posix(): path.read_bytes()
            for path in sorted(project.glob("data/**/rejects*.csv"))}


def test_forced_fetch_reruns_write_identical_rejects_and_leave_nothing_stale(tmp_path):
    inputs = tmp_path / "inputs"
    write_photos(inputs / "photos", 8)
    write_corpus(inputs / "corpus")  # undecodable, truncated, bombs, animations, next to convertible oddities
    params = dict(TINY_PARAMS, fetch={"seed": 0, "sources": [
        {"kind": "folder", "path": str(inputs / "photos"), "prefix": "ok", "val_fraction": 0.3, "test_fraction": 0.2},
        {"kind": "folder", "path": str(inputs / "corpus"), "prefix": "bad", "val_fraction": 0.3,
         "test_fraction": 0.2, "extensions": list(IMAGE_EXTENSIONS)}], "watch": str(inputs)})
    project = make_project(tmp_path / "project", params)
    run(["dvc", "repro", "manifest"], project)  # the stages after fetch have run: a changed fetch output shows
    first = rejects_files(project)
    reasons = [row["reason"] for row in read_csv(project / "data/fetch/rejects.csv")]
    assert any("cannot identify image file" in reason for reason in reasons), reasons
    assert not any(re.search(r"at 0x[0-9a-fA-F]+", reason) for reason in reasons), reasons  # no object address
    for attempt in range(2):
        run(["dvc", "repro", "--force", "fetch"], project)
        assert rejects_files(project) == first, f"rerun {attempt + 1} wrote different rejects"
        status = run(["dvc", "status", "manifest"], project)
        assert "up to date" in status.stdout, f"rerun {attempt + 1} left stages stale:\n{status.stdout}"
