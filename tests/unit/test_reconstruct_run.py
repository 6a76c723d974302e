"""run_reconstruct: byte-identical whatever the batch size or sharding, resumable, exact sizes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, materialise_autoencoder
from aligned_forensics.autoencoder.reconstruct import RECIPE_KEY, SOURCE_KEY, ReconstructConfig, Shard, run_reconstruct
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import decode_rgb, encode_jpeg, png_text, psnr
from aligned_forensics.common.io import read_csv, write_csv

SHAPES = [(32, 40), (32, 40), (37, 45), (32, 40), (24, 24), (37, 45), (32, 40), (24, 24), (32, 40)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Nine reals of three sizes (one odd), an index, and a seeded random autoencoder."""
    folder = tmp_path_factory.mktemp("reconstruct")
    rows = []
    for i, (height, width) in enumerate(SHAPES):
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 5 + i * 20, y * 6, (x + y) * 3], axis=-1).clip(0, 255).astype(np.uint8)
        path = folder / "real" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode_jpeg(pixels, quality=90))
        rows.append({"stem": f"img{i}", "split": "train" if i % 3 else "val", "path": str(path), "width": width,
                     "height": height})
    write_csv(folder / "index.csv", rows, list(rows[0]))
    materialise_autoencoder(AutoencoderConfig(kind="random", seed=1, channels=(8, 8, 8, 8)), folder / "ae")
    return {"index_path": folder / "index.csv", "autoencoder_dir": folder / "ae"}


def run(inputs, out: Path, *, shard: Shard | None = None, final=True, **config):
    rejects = out.parent / f"{out.name}-rejects.csv" if final else None
    return run_reconstruct(ReconstructConfig(device="cpu", **config), **inputs, out_dir=out, rejects_path=rejects,
                           shard=shard or Shard())


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batch_size_does_not_change_a_single_byte(inputs, tmp_path):
    run(inputs, tmp_path / "b1", batch_size=1)
    run(inputs, tmp_path / "b4", batch_size=4)
    assert len(digests(tmp_path / "b1")) == 9 and digests(tmp_path / "b1") == digests(tmp_path / "b4")


def test_two_shards_give_the_same_bytes_as_one(inputs, tmp_path):
    single = run(inputs, tmp_path / "one", batch_size=2)
    first = run(inputs, tmp_path / "two", batch_size=2, shard=Shard(0, 2), final=False)
    second = run(inputs, tmp_path / "two", batch_size=2, shard=Shard(1, 2), final=False)
    assert first["reconstructed_now"] + second["reconstructed_now"] == 9
    assert 0 < first["reconstructed_now"] < 9  # each shard did part of the work
    final = run(inputs, tmp_path / "two", batch_size=2)  # rank 0's closing pass: checks, keeps everything
    assert final["resumed"] == 9 and final["reconstructed_now"] == 0
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    assert final["psnr_mean"] == single["psnr_mean"] and final["psnr_min"] == single["psnr_min"]


def test_fakes_have_exactly_the_real_size_and_name_their_real(inputs, tmp_path):
    stats = run(inputs, tmp_path / "out")
    for row in read_csv(inputs["index_path"]):
        fake = tmp_path / "out" / row["split"] / f"{row['stem']}.png"
        assert decode_rgb(fake).shape == (int(row["height"]), int(row["width"]), 3)
        text = png_text(fake)
        assert text[SOURCE_KEY] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        assert text[RECIPE_KEY] == stats["recipe"]
    assert stats["images"] == 9 and stats["forward"] == "per_image" and stats["psnr_min"] <= stats["psnr_mean"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_reconstructs_valid_pngs_close_to_float32(inputs, tmp_path, dtype):
    """autoencoder.dtype through the whole reconstruct path on this device (CPU bf16 at least)."""
    half = tmp_path / f"ae-{dtype}"
    materialise_autoencoder(AutoencoderConfig(kind="random", seed=1, channels=(8, 8, 8, 8), dtype=dtype), half)
    full = run(inputs, tmp_path / "float32", batch_size=4)
    stats = run({**inputs, "autoencoder_dir": half}, tmp_path / dtype, batch_size=4)
    assert stats["dtype"] == dtype and stats["images"] == 9 and full["dtype"] == "float32"
    closeness = []
    for row in read_csv(inputs["index_path"]):
        fakes = [decode_rgb(tmp_path / run_name / row["split"] / f"{row['stem']}.png")
                 for run_name in ("float32", dtype)]
        assert fakes[1].shape == (int(row["height"]), int(row["width"]), 3)
        closeness.append(psnr(fakes[0], fakes[1]))
    # measured on this CPU (same weights, rounded): bf16 40.6-47.3 dB per image, fp16 54.7-56.9 dB
    assert min(closeness) > 35.0 and max(closeness) < float("inf")  # close, yet really computed in half precision


def test_resume_keeps_finished_fakes_redoes_changed_ones_and_deletes_stale(inputs, tmp_path):
    out = tmp_path / "out"
    run(inputs, out)
    reference = digests(out)
    (out / "train" / "img1.png").unlink()  # as if killed before this one was written
    (out / "train" / "img2.png.partial").write_bytes(b"half a file")  # a temp file of the killed run
    (out / "val" / "gone.png").write_bytes(b"a fake whose real left the index")
    stats = run(inputs, out)
    assert (stats["reconstructed_now"], stats["resumed"]) == (1, 8)
    assert digests(out) == reference
    stats = run(inputs, out, seed=7)  # another recipe: every fake is made again
    assert stats["reconstructed_now"] == 9 and digests(out) != reference


def test_undecodable_real_is_rejected_and_its_old_fake_removed(inputs, tmp_path):
    rows = read_csv(inputs["index_path"])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    run(inputs, out)
    rows[0]["path"] = str(broken)
    write_csv(tmp_path / "index.csv", rows, list(rows[0]))
    stats = run({**inputs, "index_path": tmp_path / "index.csv"}, out)
    assert stats["rejected"] == 1 and stats["images"] == 8 and not (out / "val" / "img0.png").exists()
    assert "broken.jpg" in (tmp_path / "out-rejects.csv").read_text()


def test_colliding_stems_name_both_reals(inputs, tmp_path):
    rows = read_csv(inputs["index_path"])
    rows[1]["stem"] = rows[0]["stem"]
    write_csv(tmp_path / "index.csv", rows, list(rows[0]))
    with pytest.raises(DataError, match=r"two reals share the stem 'img0': .*img0.jpg and .*img1.jpg"):
        run({**inputs, "index_path": tmp_path / "index.csv"}, tmp_path / "out")


def test_every_shared_stem_in_the_index_is_listed(inputs, tmp_path):
    rows = read_csv(inputs["index_path"])
    rows[1]["stem"] = rows[0]["stem"]
    rows[4]["stem"] = rows[5]["stem"] = rows[3]["stem"]
    write_csv(tmp_path / "index.csv", rows, list(rows[0]))
    with pytest.raises(DataError) as error:
        run({**inputs, "index_path": tmp_path / "index.csv"}, tmp_path / "out")
    message = str(error.value)
    assert message.startswith("2 stem(s) are shared by more than one real image")
    assert re.search(r"two reals share the stem 'img0': \S+img0.jpg and \S+img1.jpg", message)
    assert re.search(r"3 reals share the stem 'img3': \S+img3.jpg, \S+img4.jpg and \S+img5.jpg", message)
    assert "overwrite each other" in message and "dvc repro fetch" in message and not (tmp_path / "out").exists()
