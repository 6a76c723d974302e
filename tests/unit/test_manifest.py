from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import encode_jpeg, encode_png
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.data.manifest import ManifestConfig, build_manifest, pair_by_stem, write_manifest


def test_pairs_are_sorted_by_stem():
    pairs = pair_by_stem({"b": Path("r/b.jpg"), "a": Path("r/a.jpg")}, {"a": Path("f/a.png"), "b": Path("f/b.png")},
                         fake_dir=Path("f"))
    assert [stem for stem, _, _ in pairs] == ["a", "b"]


def test_missing_reconstruction_names_both_paths():
    with pytest.raises(DataError, match=r"r/a\.jpg has no f/a\.png"):
        pair_by_stem({"a": Path("r/a.jpg")}, {}, fake_dir=Path("f"))


def test_orphan_reconstruction_is_an_error():
    with pytest.raises(DataError, match=r"f/z\.png has no real"):
        pair_by_stem({}, {"z": Path("f/z.png")}, fake_dir=Path("f"))


def _dataset(root: Path, stems_by_split: dict[str, list[str]]) -> Path:
    rows = []
    pixels = np.full((16, 24, 3), 100, np.uint8)
    for split, stems in stems_by_split.items():
        for stem in stems:
            real = root / "real" / split / f"{stem}.jpg"
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_bytes(encode_jpeg(pixels, quality=90))
            fake = root / "fake" / split / f"{stem}.png"
            fake.parent.mkdir(parents=True, exist_ok=True)
            fake.write_bytes(encode_png(pixels))
            rows.append({"stem": stem, "split": split, "source": "t", "path": real.as_posix(), "width": 24,
                         "height": 16, "format": "jpeg", "origin": "test"})
    index = root / "index.csv"
    write_csv(index, rows, list(rows[0]))
    return index


def test_corrupt_and_upstream_rejected_images_are_listed_not_fatal(tmp_path):
    index = _dataset(tmp_path, {"train": ["a", "b", "c"], "val": ["d", "e"], "test": ["f"]})
    (tmp_path / "fake" / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "fake" / "val" / "e.png").unlink()  # rejected by reconstruct, so no fake exists
    upstream = tmp_path / "recon_rejects.csv"
    write_csv(upstream, [{"path": (tmp_path / "real/val/e.jpg").as_posix(), "stage": "reconstruct",
                          "reason": "x"}], ["path", "stage", "reason"])
    rows, rejects = build_manifest(ManifestConfig(), index_path=index, fake_dir=tmp_path / "fake",
                                   upstream_rejects=[upstream])
    assert [row["stem"] for row in rows["train"]] == ["a", "c"]
    assert [row["stem"] for row in rows["val"]] == ["d"]
    assert len(rejects) == 1 and rejects[0]["path"].endswith("train/b.jpg")
    counts = write_manifest(rows, rejects, tmp_path / "manifest")
    assert counts["pairs_train"] == 2 and counts["rejected"] == 1 and counts["formats"] == {"jpeg->png": 4}
    written = read_csv(tmp_path / "manifest" / "train.csv")
    assert list(written[0]) == ["stem", "real_path", "fake_path", "width", "height", "real_format", "fake_format",
                                "source", "real_source_format", "real_sha256", "fake_sha256"]


def test_size_mismatch_is_rejected(tmp_path):
    index = _dataset(tmp_path, {"train": ["a", "b"], "val": ["c"], "test": []})
    (tmp_path / "fake" / "train" / "a.png").write_bytes(encode_png(np.zeros((8, 24, 3), np.uint8)))
    rows, rejects = build_manifest(ManifestConfig(verify_decode=False), index_path=index,
                                   fake_dir=tmp_path / "fake", upstream_rejects=[])
    assert [row["stem"] for row in rows["train"]] == ["b"]
    assert "size mismatch" in rejects[0]["reason"]
