from __future__ import annotations

import numpy as np
import pytest

from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.images import encode_jpeg, encode_png
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.fetch import FetchConfig, plan_fetch, run_fetch
from aligned_forensics.data.sources import folder


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub dir").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)  # odd sizes kept as they are
    (root / "a.jpg").write_bytes(encode_jpeg(pixels, quality=80))
    (root / "B.JPEG").write_bytes(encode_jpeg(pixels, quality=80))
    (root / "sub dir" / "c.png").write_bytes(encode_png(pixels))
    (root / "notes.txt").write_text("not an image")
    (root / "fake.jpg").write_text("a text file named like a photo")
    return root


def test_lists_recursively_sorted_and_case_insensitively(tree):
    names = [p.relative_to(tree).as_posix() for p in folder.list_images(tree, folder.IMAGE_EXTENSIONS)]
    assert names == ["B.JPEG", "a.jpg", "fake.jpg", "sub dir/c.png"]


def test_split_depends_only_on_seed_and_path():
    splits = [folder.split_for(f"img{i}.jpg", seed=1, val_fraction=0.2, test_fraction=0.1) for i in range(2000)]
    assert splits == [folder.split_for(f"img{i}.jpg", seed=1, val_fraction=0.2, test_fraction=0.1)
                      for i in range(2000)]
    assert splits.count("val") / 2000 == pytest.approx(0.2, abs=0.03)
    assert splits.count("test") / 2000 == pytest.approx(0.1, abs=0.03)


def test_stems_are_prefixed_and_safe():
    assert folder.stem_for("coco", "sub dir/x.y.jpg") == "coco-sub_dir__x.y"


def test_fetch_copies_bytes_verbatim_and_rejects_non_images(tree, tmp_path):
    spec = {"kind": "folder", "path": str(tree), "split": "train", "prefix": "mine"}
    counts = run_fetch(FetchConfig(seed=0, sources=(spec,)), out_dir=tmp_path / "real",
                       index_path=tmp_path / "index.csv", rejects_path=tmp_path / "rejects.csv")
    assert counts["images"] == 3 and counts["rejected"] == 1
    rows = {row["stem"]: row for row in read_csv(tmp_path / "index.csv")}
    assert set(rows) == {"mine-a", "mine-B", "mine-sub_dir__c"}
    copied = tmp_path / "real" / "train" / "mine-sub_dir__c.png"
    assert copied.read_bytes() == (tree / "sub dir" / "c.png").read_bytes()
    assert rows["mine-B"]["format"] == "jpeg" and (rows["mine-a"]["width"], rows["mine-a"]["height"]) == ("30", "21")
    assert "fake.jpg" in read_csv(tmp_path / "rejects.csv")[0]["path"]


def test_clear_errors(tree, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        plan_fetch(FetchConfig(seed=0, sources=({"kind": "folder", "path": str(tmp_path / "nope")},)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found 0 images"):
        plan_fetch(FetchConfig(seed=0, sources=({"kind": "folder", "path": str(tmp_path / "empty")},)))
    with pytest.raises(DataError, match="count is 10 but only 4"):
        plan_fetch(FetchConfig(seed=0, sources=({"kind": "folder", "path": str(tree), "count": 10},)))
    (tree / "a.png").write_bytes((tree / "sub dir" / "c.png").read_bytes())
    with pytest.raises(ParamsError, match="share the stem 'photos-a'"):
        plan_fetch(FetchConfig(seed=0, sources=({"kind": "folder", "path": str(tree)},)))
