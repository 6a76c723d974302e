"""reconstruct.format: png keeps every fake's bytes as before; match writes a JPEG real's fake as a JPEG like it."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, materialise_autoencoder
from aligned_forensics.autoencoder.reconstruct import (
    RECIPE_KEY,
    SOURCE_KEY,
    ReconstructConfig,
    fake_text,
    recipe_digest,
    reconstructed_pairs,
    run_reconstruct,
)
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import decode_rgb, encode_png, png_text, psnr
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.data.manifest import ManifestConfig, build_manifest, find_fakes

# (stem, how the real is saved): JPEGs of three qualities and every subsampling Pillow writes, a grey JPEG, a PNG
REALS = [("q90_420", {"quality": 90, "subsampling": 2}), ("q75_422", {"quality": 75, "subsampling": 1}),
         ("q95_444", {"quality": 95, "subsampling": 0}), ("grey", {"quality": 85, "mode": "L"}),
         ("lossless", {"format": "PNG"})]


def save_real(path: Path, pixels: np.ndarray, how: dict) -> None:
    image = Image.fromarray(pixels)
    if how.get("mode") == "L":
        image = image.convert("L")
    options = {key: value for key, value in how.items() if key != "mode"}
    image.save(path, **({"format": "JPEG"} | options))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Five reals of two sizes (odd ones: not whole JPEG blocks) in train/val, an index and a random autoencoder."""
    folder = tmp_path_factory.mktemp("formats")
    rows = []
    for i, (stem, how) in enumerate(REALS):
        height, width = (37, 45) if i % 2 else (32, 40)
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 5 + i * 20, y * 6, (x + y) * 3], axis=-1).clip(0, 255).astype(np.uint8)
        path = folder / "real" / f"{stem}.{'png' if how.get('format') == 'PNG' else 'jpg'}"
        path.parent.mkdir(exist_ok=True)
        save_real(path, pixels, how)
        rows.append({"stem": stem, "split": "train" if i % 2 else "val", "source": "t", "path": str(path),
                     "width": width, "height": height})
    write_csv(folder / "index.csv", rows, list(rows[0]))
    materialise_autoencoder(AutoencoderConfig(kind="random", seed=1, channels=(8, 8, 8, 8)), folder / "ae")
    return {"index_path": folder / "index.csv", "autoencoder_dir": folder / "ae"}


def run(inputs, out: Path, **config):
    return run_reconstruct(ReconstructConfig(device="cpu", **config), **inputs, out_dir=out,
                           rejects_path=out.parent / f"{out.name}-rejects.csv")


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def compression_of(path: Path) -> tuple[dict, int]:
    """Quantization tables and chroma subsampling, read by Pillow itself."""
    with Image.open(path) as image:
        return ({key: list(table) for key, table in image.quantization.items()},
                JpegImagePlugin.get_sampling(image))


def test_match_copies_each_jpeg_reals_tables_and_subsampling_and_keeps_lossless_reals_lossless(inputs, tmp_path):
    stats = run(inputs, tmp_path / "out", format="match")
    scores = []
    for row in read_csv(inputs["index_path"]):
        real, lossless = Path(row["path"]), row["stem"] == "lossless"
        fake = tmp_path / "out" / row["split"] / f"{row['stem']}{'.png' if lossless else '.jpg'}"
        assert sorted(p.name for p in fake.parent.glob(f"{row['stem']}.*")) == [fake.name]
        with Image.open(fake) as image:
            assert image.format == ("PNG" if lossless else "JPEG")
            assert image.size == (int(row["width"]), int(row["height"]))
        if lossless:
            assert png_text(fake) == {SOURCE_KEY: hashlib.sha256(real.read_bytes()).hexdigest(),
                                      RECIPE_KEY: stats["recipe"]}
        elif row["stem"] == "grey":  # one luminance table, reused for the colour fake's chroma, nothing subsampled
            tables, sampling = compression_of(real)
            assert compression_of(fake) == ({0: tables[0], 1: tables[0]}, 0) and sampling == -1
        else:
            assert compression_of(fake) == compression_of(real)
        if not lossless:
            assert fake_text(fake) == {SOURCE_KEY: hashlib.sha256(real.read_bytes()).hexdigest(),
                                       RECIPE_KEY: stats["recipe"]}
        scores.append(psnr(decode_rgb(real), decode_rgb(fake)))  # measured on the fake as written
    assert stats["fake_formats"] == {"jpeg": 4, "png": 1} and stats["format"] == "match"
    assert stats["psnr_mean"] == pytest.approx(np.mean(scores)) and stats["psnr_min"] == pytest.approx(min(scores))


def test_match_reruns_and_resumes_to_the_same_bytes(inputs, tmp_path):
    out = tmp_path / "out"
    run(inputs, out, format="match")
    reference = digests(out)
    again = run(inputs, tmp_path / "again", format="match", batch_size=1)
    assert digests(tmp_path / "again") == reference and again["reconstructed_now"] == 5
    (out / "train" / "q75_422.jpg").unlink()  # as if killed before this one was written
    (out / "val" / "q95_444.jpg.partial").write_bytes(b"half a file")  # a temp file of the killed run
    (out / "val" / "q90_420.jpg").write_bytes(b"\xff\xd8 truncated")  # unreadable: made again
    stats = run(inputs, out, format="match")
    assert (stats["reconstructed_now"], stats["resumed"]) == (2, 3) and digests(out) == reference


def test_switching_format_replaces_the_fakes_of_the_other_suffix(inputs, tmp_path):
    out = tmp_path / "out"
    run(inputs, out, format="png")
    png_run = digests(out)
    assert all(name.endswith(".png") for name in png_run)
    stats = run(inputs, out, format="match")
    assert stats["reconstructed_now"] == 5, "the recipe names the format: even the PNG fake is made again"
    assert sorted(digests(out)) == ["train/grey.jpg", "train/q75_422.jpg", "val/lossless.png", "val/q90_420.jpg",
                                    "val/q95_444.jpg"]
    run(inputs, out, format="png")
    assert digests(out) == png_run


def test_png_keeps_the_recipe_digest_and_text_chunks_of_before_format_existed(inputs, tmp_path):
    """The digest as computed before `reconstruct.format`: png fakes keep their bytes, match fakes differ."""
    digest = hashlib.sha256()
    folder = inputs["autoencoder_dir"]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps({"seed": 42, "sample": "sample", "grouping": "per_image", "device": "cpu"},
                             sort_keys=True).encode())
    cpu = torch.device("cpu")
    assert recipe_digest(ReconstructConfig(), folder, per_image=True, device=cpu) == digest.hexdigest()[:32]
    assert recipe_digest(ReconstructConfig(format="match"), folder, per_image=True, device=cpu) != \
        digest.hexdigest()[:32]
    stats = run(inputs, tmp_path / "explicit", format="png")
    run(inputs, tmp_path / "default")
    assert stats["recipe"] == digest.hexdigest()[:32] and stats["fake_formats"] == {"png": 5}
    assert digests(tmp_path / "explicit") == digests(tmp_path / "default")
    fake = tmp_path / "explicit" / "train" / "grey.png"
    expected = encode_png(decode_rgb(fake), text=png_text(fake))  # the same encoder, the same two chunks
    assert fake.read_bytes() == expected and set(png_text(fake)) == {SOURCE_KEY, RECIPE_KEY}


def test_an_unmatchable_jpeg_is_rejected_with_the_fix(inputs, tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 32), (10, 20, 30, 40)).save(cmyk, format="JPEG")
    rows = read_csv(inputs["index_path"])
    rows[0] = {**rows[0], "path": str(cmyk), "width": 40, "height": 32}
    write_csv(tmp_path / "index.csv", rows, list(rows[0]))
    stats = run({**inputs, "index_path": tmp_path / "index.csv"}, tmp_path / "out", format="match")
    assert stats["rejected"] == 1 and "convert it to PNG" in (tmp_path / "out-rejects.csv").read_text()
    assert stats["images"] == 4


def test_manifest_pairs_jpeg_fakes_and_records_both_formats(inputs, tmp_path):
    run(inputs, tmp_path / "out", format="match")
    rows, rejects = build_manifest(ManifestConfig(), index_path=inputs["index_path"], fake_dir=tmp_path / "out",
                                   upstream_rejects=[])
    assert not rejects
    formats = {row["stem"]: (row["real_format"], row["fake_format"], Path(row["fake_path"]).suffix)
               for split in rows.values() for row in split}
    assert formats == {"q90_420": ("jpeg", "jpeg", ".jpg"), "q75_422": ("jpeg", "jpeg", ".jpg"),
                       "q95_444": ("jpeg", "jpeg", ".jpg"), "grey": ("jpeg", "jpeg", ".jpg"),
                       "lossless": ("png", "png", ".png")}
    assert {stem for stem, _, fake in reconstructed_pairs(inputs["index_path"], tmp_path / "out", count=5)
            if fake.suffix == ".jpg"} == {"q90_420", "q75_422", "q95_444", "grey"}


def test_manifest_refuses_a_stem_with_two_fakes(tmp_path):
    (tmp_path / "a.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="JPEG")
    (tmp_path / "a.jpg").write_bytes(image.getvalue())
    (tmp_path / "b.jpg.partial").write_bytes(b"ignored")
    with pytest.raises(DataError, match=r"1 stem\(s\) have two fakes, e.g. \S+a\.jpg and \S+a\.png.*dvc repro "
                                        "reconstruct"):
        find_fakes(tmp_path)
    (tmp_path / "a.png").unlink()
    assert find_fakes(tmp_path) == {"a": tmp_path / "a.jpg"}
