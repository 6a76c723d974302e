"""The bad-input corpus through every stage: each file is converted by a documented rule or rejected with a
reason in that stage's rejects file and counted in its metrics, and the rest of the run completes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.images import IMAGE_EXTENSIONS, decode_rgb, image_header
from aligned_forensics.common.io import read_csv
from aligned_forensics.data.fetch import FetchConfig, plan_fetch
from tests.conftest import TINY_PARAMS
from tests.faults.corpus import CONVERTED, CORPUS, FETCH, RECONSTRUCT, pixels, write_corpus, write_photos
from tests.stages.conftest import stage_main

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own notice

# Why each fetch reject is rejected: the reason in rejects.csv must say so.
FETCH_REASONS = {
    "empty.jpg": "cannot identify image file",
    "text.jpg": "cannot identify image file",
    "animated.gif": r"animated or multi-frame GIF \(3 frames\)",
    "bomb header.png": r"400,000,000 pixels is over the limit of 89,478,485 pixels",
    "bomb bilevel.png": r"10000x10000 = 100,000,000 pixels is over the limit of 89,478,485 pixels",
    "bomb.gif": r"4,294,836,225 pixels is over the limit of 89,478,485 pixels",
    "tiny.png": "3x5 is smaller than the 8-pixel minimum side",
}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> Path:
    """Every stage once, on 12 ordinary photos plus the corpus (a folder source with .gif allowed), and an
    evaluate test set made of the corpus folder itself."""
    folder = tmp_path_factory.mktemp("corpus_run")
    write_photos(folder / "photos", 12)
    write_corpus(folder / "corpus")
    params = dict(TINY_PARAMS)
    params["fetch"] = {"seed": 0, "sources": [
        {"kind": "folder", "path": str(folder / "photos"), "prefix": "ok", "val_fraction": 0.3, "test_fraction": 0.2},
        {"kind": "folder", "path": str(folder / "corpus"), "prefix": "bad", "val_fraction": 0.3,
         "test_fraction": 0.2, "extensions": list(IMAGE_EXTENSIONS)}], "watch": str(folder)}
    params["evaluate"] = dict(TINY_PARAMS["evaluate"], test_sets=[
        {"name": "test", "split": "test"},
        {"name": "corpus", "real": str(folder / "corpus" / "*"), "fake": str(folder / "photos")}],
        sweeps={"test_set": "corpus", "jpeg": [50], "webp": [], "resize": [0.5]}, watch=str(folder))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    previous = Path.cwd()
    os.chdir(folder)  # stages take repo-relative default paths, as under `dvc repro`
    try:
        for name in ("fetch", "autoencoder", "reconstruct", "manifest", "train", "threshold", "evaluate", "report"):
            assert stage_main(name)([]) == 0, f"stage {name} failed on the bad-input corpus"
    finally:
        os.chdir(previous)
    return folder


def _names(rows: list[dict[str, str]], column: str = "path") -> set[str]:
    return {Path(row[column].split(":", 1)[-1]).name for row in rows}


def test_fetch_rejects_undecodable_bombs_animations_and_tiny_files_with_reasons(corpus_run):
    rejects = {Path(row["path"]).name: row["reason"] for row in read_csv(corpus_run / "data/fetch/rejects.csv")}
    assert set(rejects) == {name for name, (_, rule) in CORPUS.items() if rule == FETCH}
    for name, reason in FETCH_REASONS.items():
        assert re.search(reason, rejects[name]), (name, rejects[name])
    metrics = json.loads((corpus_run / "metrics/info/fetch.json").read_text())
    assert metrics["rejected"] == len(FETCH_REASONS)
    assert metrics["images"] == 12 + sum(rule != FETCH for _, rule in CORPUS.values())


def test_fetch_records_displayed_sizes_and_distinct_stems_for_non_ascii_names(corpus_run):
    index = {Path(row["origin"]).name: row for row in read_csv(corpus_run / "data/fetch/index.csv")}
    assert (index["rotated.jpg"]["width"], index["rotated.jpg"]["height"]) == ("40", "48")  # EXIF 6: turned
    assert index["北京.jpg"]["stem"] != index["上海.jpg"]["stem"]
    assert re.fullmatch(r"bad-_-[0-9a-f]{8}", index["北京.jpg"]["stem"])
    assert re.fullmatch(r"bad-caf_au_lait-[0-9a-f]{8}", index["café au lait.jpg"]["stem"])
    assert index["small.png"]["width"] == "16"  # smaller than the 32-pixel training crop: kept


def test_reconstruct_rejects_truncated_files_and_pairs_everything_else(corpus_run):
    rejects = read_csv(corpus_run / "data/reconstruct/rejects.csv")
    origins = {row["path"]: Path(row["origin"]).name for row in read_csv(corpus_run / "data/fetch/index.csv")}
    assert {origins[row["path"]] for row in rejects} == {name for name, (_, rule) in CORPUS.items()
                                                          if rule == RECONSTRUCT}
    assert all("truncated" in row["reason"] for row in rejects)
    assert json.loads((corpus_run / "metrics/reconstruct.json").read_text())["rejected"] == 2
    manifest = [row for split in ("train", "val", "test")
                for row in read_csv(corpus_run / f"data/manifest/{split}.csv")]
    assert len(manifest) == 12 + sum(rule == CONVERTED for _, rule in CORPUS.values())
    assert all(row["width"] == str(decode_rgb(corpus_run / row["fake_path"]).shape[1]) for row in manifest)
    assert json.loads((corpus_run / "metrics/manifest.json").read_text())["rejected"] == 0


def test_converted_files_follow_the_documented_decode_rule(tmp_path):
    write_corpus(tmp_path)
    for name, (_, rule) in CORPUS.items():
        if rule != CONVERTED:
            continue
        decoded = decode_rgb(tmp_path / name)
        assert decoded.dtype == np.uint8 and decoded.shape[2] == 3, name
        width, height, _ = image_header(tmp_path / name, as_displayed=True)
        assert decoded.shape[:2] == (height, width), name
    grey16 = decode_rgb(tmp_path / "grey16.png")  # 16-bit levels are scaled to 8 bits, not clipped
    assert np.array_equal(grey16[..., 0], pixels(2)[..., 0]) and np.array_equal(grey16[..., 0], grey16[..., 2])
    rotated = decode_rgb(tmp_path / "rotated.jpg")  # EXIF orientation 6: turned 90 degrees clockwise
    assert rotated.shape == (48, 40, 3)
    with Image.open(tmp_path / "rotated.jpg") as stored:  # the pixels as stored, orientation ignored
        assert np.array_equal(rotated, np.rot90(np.asarray(stored.convert("RGB")), k=-1))
    rgba = decode_rgb(tmp_path / "rgba.png")  # alpha dropped, colours kept as stored
    assert np.array_equal(rgba, pixels(6))


def test_later_stages_complete_and_evaluate_lists_every_unreadable_corpus_file(corpus_run):
    evaluation = json.loads((corpus_run / "metrics/info/eval.json").read_text())
    rejects = read_csv(corpus_run / "data/evaluate/corpus/rejects.csv")
    unreadable = {name for name, (_, rule) in CORPUS.items() if rule != CONVERTED} - {"tiny.png"}
    assert _names(rejects) == unreadable
    assert evaluation["sets"]["corpus"]["rejected"] == len(unreadable)
    scored = _names(read_csv(corpus_run / "data/evaluate/corpus/scores.csv"))
    assert {name for name, (_, rule) in CORPUS.items() if rule == CONVERTED} | {"tiny.png"} <= scored
    assert json.loads((corpus_run / "metrics/info/threshold.json").read_text())["rejected"] == 0
    assert (corpus_run / "data/model/best.pt").is_file() and (corpus_run / "report/report.md").is_file()


def test_two_files_with_one_stem_stop_fetch_before_any_work_naming_both(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(CORPUS["cmyk.jpg"][0]())
    (tmp_path / "photos" / "a.png").write_bytes(CORPUS["small.png"][0]())
    config = FetchConfig(seed=0, sources=({"kind": "folder", "path": str(tmp_path / "photos"), "prefix": "p"},))
    with pytest.raises(ParamsError) as error:
        plan_fetch(config, downloads=tmp_path / "downloads")
    message = str(error.value)
    assert "share the stem 'p-a'" in message and str(tmp_path / "photos" / "a.jpg") in message
    assert str(tmp_path / "photos" / "a.png") in message and "prefix" in message
    assert not (tmp_path / "downloads").exists()


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_bombs_are_refused_even_when_warnings_are_errors(tmp_path):
    """Pillow only warns between 1x and 2x its limit; as an error (python -W error) that must still be a reject."""
    from aligned_forensics.common.images import ImageDecodeError
    from tests.faults.corpus import png_bilevel_bomb

    (tmp_path / "bomb.png").write_bytes(png_bilevel_bomb())
    for read in (decode_rgb, image_header):
        with pytest.raises(ImageDecodeError, match=r"100,000,000 pixels is over the limit of 89,478,485"):
            read(tmp_path / "bomb.png")
