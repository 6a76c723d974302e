from __future__ import annotations

import re
from pathlib import Path

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
    counts = run_fetch(FetchConfig(seed=0, sources=(spec,), watch=str(tree)), out_dir=tmp_path / "real",
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


def test_every_shared_stem_is_listed_with_which_file_to_rename(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for name in ("a.jpg", "a.png", "b.jpg", "b.jpeg", "c.jpg", "c.png", "c.webp", "d.jpg"):
        (root / name).write_bytes(encode_png(pixels) if name.endswith(".png") else encode_jpeg(pixels, quality=80))
    config = FetchConfig(seed=0, sources=({"kind": "folder", "path": str(root), "prefix": "p"},))
    with pytest.raises(ParamsError) as error:
        plan_fetch(config, downloads=tmp_path / "downloads")
    message = str(error.value)
    assert message.startswith("3 stem(s) are shared by more than one real image")
    assert f"two reals share the stem 'p-a': {root / 'a.jpg'} and {root / 'a.png'}; keep a.jpg" in message
    assert f"two reals share the stem 'p-b': {root / 'b.jpeg'} and {root / 'b.jpg'}; keep b.jpeg" in message
    assert f"3 reals share the stem 'p-c': {root / 'c.jpg'}, {root / 'c.png'} and {root / 'c.webp'}" in message
    assert f"rename (or remove) {root / 'c.png'} to c_2.png, {root / 'c.webp'} to c_3.webp" in message
    assert "'p-d'" not in message and "prefix" in message
    for old, new in re.findall(r"(\S+) to (\S+?)(?:,|$)", message, flags=re.MULTILINE):
        if old.startswith(str(root)):
            Path(old).rename(root / new)  # the advice, followed literally, leaves unique stems
    assert len(plan_fetch(config, downloads=tmp_path / "downloads")) == 8


def test_many_shared_stems_list_the_first_twenty_and_count_the_rest(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    data = encode_jpeg(np.zeros((16, 16, 3), np.uint8), quality=80)
    for i in range(25):
        (root / f"{i:02d}.jpg").write_bytes(data)
        (root / f"{i:02d}.jpeg").write_bytes(data)
    with pytest.raises(ParamsError) as error:
        plan_fetch(FetchConfig(seed=0, sources=({"kind": "folder", "path": str(root), "prefix": "p"},)))
    message = str(error.value)
    assert message.startswith("25 stem(s)") and message.count("two reals share the stem") == 20
    assert "'p-19'" in message and "'p-20'" not in message and "... and 5 more shared stem(s)" in message
