from __future__ import annotations

import hashlib

import numpy as np
import pytest

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.fetch import FetchConfig, plan_fetch, run_fetch
from aligned_forensics.data.sources import samples
from aligned_forensics.data.sources.common import LoadedImage


def test_groups_are_split_deterministically_and_exclusively():
    groups = [photo.group for photo in samples.SAMPLE_PHOTOS]
    first = samples.assign_groups(groups, val_groups=2, test_groups=2, seed=3)
    assert first == samples.assign_groups(list(reversed(groups)), val_groups=2, test_groups=2, seed=3)
    assert sorted(first.values()).count("val") == 2 and list(first.values()).count("test") == 2
    assert set(first) == set(groups)
    others = {seed: samples.assign_groups(groups, val_groups=2, test_groups=2, seed=seed) for seed in range(8)}
    assert len({tuple(sorted(split.items())) for split in others.values()}) > 1  # the seed matters


def test_other_groups_val_keeps_every_photo_out_of_training_and_leaves_the_test_photos_where_they_were():
    groups = [photo.group for photo in samples.SAMPLE_PHOTOS]
    default = samples.assign_groups(groups, val_groups=2, test_groups=2, seed=0)
    no_train = samples.assign_groups(groups, val_groups=2, test_groups=2, seed=0, other_groups="val")
    assert "train" not in no_train.values()
    assert {g for g, s in no_train.items() if s == "test"} == {g for g, s in default.items() if s == "test"}
    assert {g for g, s in no_train.items() if s == "val"} == {g for g, s in default.items() if s != "test"}
    with pytest.raises(ParamsError, match="other_groups"):
        samples.Config(kind="samples", other_groups="test")


@pytest.mark.parametrize("seed", range(5))
def test_crops_are_multiples_of_8_and_inside_the_photo(seed):
    rng = np.random.default_rng(seed)
    for top, left, height, width in samples.draw_crops(300, 451, count=200, min_side=64, max_side=256, rng=rng):
        assert height % 8 == 0 and width % 8 == 0
        assert 64 <= height <= 256 and 64 <= width <= 256
        assert top >= 0 and top + height <= 300 and left >= 0 and left + width <= 451


def _config(**overrides) -> FetchConfig:
    spec = {"kind": "samples", "crops_per_photo": 3, "min_side": 32, "max_side": 48} | overrides
    return FetchConfig(seed=0, sources=(spec,))


def test_no_photo_leaks_across_splits():
    planned = plan_fetch(_config())
    split_of_photo: dict[str, set[str]] = {}
    for item in planned:
        photo = item.origin.split(" crop")[0]
        split_of_photo.setdefault(photo, set()).add(item.split)
    assert all(len(splits) == 1 for splits in split_of_photo.values())
    motorcycle = {item.split for item in planned if "motorcycle" in item.stem}
    assert len(motorcycle) == 1  # two views of one scene stay together


def test_fetch_is_byte_identical_across_runs(tmp_path):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run / "real"
        counts = run_fetch(_config(), out_dir=out, index_path=tmp_path / run / "index.csv",
                           rejects_path=tmp_path / run / "rejects.csv")
        files = sorted(out.rglob("*.jpg"))
        assert len(files) == counts["images"] == 3 * len(samples.SAMPLE_PHOTOS)
        digests.append([(f.relative_to(out).as_posix(), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files])
        rows = read_csv(tmp_path / run / "index.csv")
        assert all(int(row["width"]) % 8 == 0 and int(row["height"]) % 8 == 0 for row in rows)
        assert {row["format"] for row in rows} == {"jpeg"}
    assert digests[0] == digests[1]
    assert not list(tmp_path.rglob("*.partial"))


def test_duplicate_stems_across_sources_are_an_error():
    spec = {"kind": "samples", "crops_per_photo": 1, "min_side": 32, "max_side": 48}
    with pytest.raises(ParamsError, match="share the stem 'samples-astronaut-0000'"):
        plan_fetch(FetchConfig(seed=0, sources=(spec, spec)))


def test_undecodable_source_image_is_rejected_not_written(tmp_path, monkeypatch):
    """A source kind is a module with Config and plan(): here one whose second image is garbage."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    from aligned_forensics.common.images import encode_jpeg
    from aligned_forensics.data import sources

    @dataclass(frozen=True)
    class Config:
        kind: str

    good = encode_jpeg(np.zeros((16, 16, 3), np.uint8), quality=90)
    items = [{"stem": f"t-{i}", "split": split, "source": "test", "origin": f"test #{i}",
              "load": (lambda data=data: LoadedImage(data, ".jpg", "jpeg", "verbatim"))}
             for i, (split, data) in enumerate([("train", good), ("train", b"garbage"), ("val", good)])]
    monkeypatch.setitem(sources.SOURCE_KINDS, "test", SimpleNamespace(Config=Config, plan=lambda config, ctx: items))
    counts = run_fetch(FetchConfig(seed=0, sources=({"kind": "test"},)), out_dir=tmp_path / "real",
                       index_path=tmp_path / "index.csv", rejects_path=tmp_path / "rejects.csv")
    assert counts["images"] == 2 and counts["rejected"] == 1
    assert sorted(p.name for p in (tmp_path / "real").rglob("*.jpg")) == ["t-0.jpg", "t-2.jpg"]
    assert read_csv(tmp_path / "rejects.csv")[0]["path"] == "test #1"
