"""fetch's outside inputs are DVC dependencies, with the real `dvc`: a folder source inside `fetch.watch`.

Adding, editing or removing one photo makes `dvc status` show `fetch` stale (no `--force`); restoring it makes
the project clean again; a folder source outside the watch stops fetch before any work.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from aligned_forensics.common.images import encode_jpeg
from tests.conftest import TINY_PARAMS
from tests.faults.corpus import pixels, write_photos
from tests.projects import make_project, run

pytestmark = pytest.mark.slow
STATUS = ["dvc", "status", "--json", "fetch"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """A project whose only source is a folder of 8 photos outside it, watched; `dvc repro fetch` done."""
    photos = tmp_path_factory.mktemp("outside") / "photos"
    write_photos(photos, 8)
    params = copy.deepcopy(TINY_PARAMS)
    params["fetch"] = {"seed": 0, "sources": [{"kind": "folder", "path": str(photos), "prefix": "p",
                                               "val_fraction": 0.25, "test_fraction": 0.25}],
                       "watch": str(photos)}
    folder = make_project(tmp_path_factory.mktemp("project"), params)
    run(["dvc", "repro", "fetch"], folder)
    return folder, photos


def stale(folder: Path) -> dict:
    return json.loads(run(STATUS, folder).stdout)


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_one_changed_photo_in_a_folder_source_makes_fetch_stale(project, change):
    folder, photos = project
    assert stale(folder) == {}  # up to date first
    target = photos / ("photo03.jpg" if change != "add" else "new.jpg")
    original = target.read_bytes() if target.exists() else None
    if change == "remove":
        target.unlink()
    else:
        target.write_bytes(encode_jpeg(pixels(999), quality=90))
    try:
        changed = stale(folder)
    finally:
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)
    assert set(changed) == {"fetch"}, changed
    assert {"changed deps": {str(photos): "modified"}} in changed["fetch"], changed  # the folder itself
    assert stale(folder) == {}  # restored: nothing stale again


def test_the_folder_is_hashed_by_dvc_and_a_rerun_picks_up_a_new_photo(project):
    folder, photos = project
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    dep = next(dep for dep in lock["stages"]["fetch"]["deps"] if dep["path"] == str(photos))
    assert dep["md5"].endswith(".dir") and dep["nfiles"] == 8
    extra = photos / "zz_extra.jpg"
    extra.write_bytes(encode_jpeg(pixels(1234), quality=90))
    try:
        run(["dvc", "repro", "fetch"], folder)  # no --force: the change alone re-runs it
        index = (folder / "data/fetch/index.csv").read_text()
        assert "p-zz_extra" in index and stale(folder) == {}
    finally:
        extra.unlink()
        run(["dvc", "repro", "fetch"], folder)
    assert "p-zz_extra" not in (folder / "data/fetch/index.csv").read_text()


def test_a_folder_source_outside_the_watch_stops_fetch_before_any_work(project, tmp_path):
    folder, photos = project
    result = run(["dvc", "exp", "run", "--temp", "-S", "fetch.watch=stages/fetch.py", "fetch"], folder, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"params key 'fetch.sources[0].path': {photos} is not inside fetch.watch" in output, output[-2000:]
    assert f"dvc exp run -S fetch.watch={photos}" in output
