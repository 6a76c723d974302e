"""The training-free reference scores: round-trip errors against a direct computation, calibration on val only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, load_autoencoder, materialise_autoencoder
from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.images import decode_rgb, encode_png
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.common.params import build_config
from aligned_forensics.data.sources.samples import SAMPLE_PHOTOS, bundled_photo_path
from aligned_forensics.detector.metrics import select_threshold
from aligned_forensics.evaluation.reference import (
    ReferenceConfig,
    reference_score,
    roundtrip_errors,
    run_reference,
    write_reference_scores,
)

TAEF2 = Path(__file__).resolve().parents[2] / "assets" / "autoencoders" / "taef2"
CPU = torch.device("cpu")


def photo_crop(name: str, top: int, left: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: a crop of a bundled natural photo."""
    photo = decode_rgb(bundled_photo_path(next(p for p in SAMPLE_PHOTOS if p.name == name)))
    return np.ascontiguousarray(photo[top:top + height, left:left + width])


def direct_roundtrip(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 written from each family's conventions, not from roundtrip.py."""
    height, width = image.shape[:2]
    padded = np.pad(image.astype(np.float32), ((0, -height % 8), (0, -width % 8), (0, 0)), mode="reflect")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None]  # (1, 3, H', W') in 0..255
    with torch.no_grad():
        if hasattr(model, "decoder") and not hasattr(model, "decode"):  # a TAESD pair: [0, 1] in and out
            out = model.decoder(model.encoder(x / 255.0)).clamp(0, 1) * 255.0
        else:  # a diffusers KL VAE: [-1, 1] in and out, the posterior's mode
            out = (model.decode(model.encode(x / 127.5 - 1.0).latent_dist.mode()).sample.clamp(-1, 1) + 1.0) * 127.5
    return np.round(out[0].permute(1, 2, 0).numpy()[:height, :width]).astype(np.uint8)


def direct_errors(model: torch.nn.Module, image: np.ndarray) -> tuple[float, float]:
    """(e1, e2) with numpy: MSE(x, AE(x)) and MSE(AE(x), AE(AE(x))) in squared 8-bit levels."""
    once = direct_roundtrip(model, image)
    twice = direct_roundtrip(model, once)
    mse = lambda a, b: float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))  # noqa: E731
    return mse(image, once), mse(once, twice)


@pytest.fixture(scope="module")
def random_autoencoder(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """The demo's untrained KL autoencoder (tiny widths), materialised and loaded as the stage does."""
    folder = tmp_path_factory.mktemp("ae") / "autoencoder"
    materialise_autoencoder(AutoencoderConfig(kind="random", seed=0, channels=(8, 8, 8, 8)), folder)
    return folder, load_autoencoder(folder, device=CPU)[0]


def _images(shape: tuple[int, int]) -> list[np.ndarray]:
    return [photo_crop("astronaut", 40, 100, *shape), photo_crop("coffee", 100, 200, *shape),
            photo_crop("chelsea", 30, 60, *shape)]


@pytest.mark.parametrize("shape", [(32, 48), (37, 50)])  # the second is padded to 40 x 56 and cropped back
@pytest.mark.parametrize("per_image", [True, False])
def test_errors_match_a_direct_computation_with_the_demo_autoencoder(random_autoencoder, shape, per_image):
    _, model = random_autoencoder
    images = _images(shape)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (3, 3, H, W) uint8
    errors = roundtrip_errors(model, pixels, twice=True, per_image=per_image)
    expected = np.array([direct_errors(model, image) for image in images])
    np.testing.assert_allclose(errors, expected, rtol=1e-3, atol=1e-2)  # a rare pixel may round the other way
    assert (errors > 0).all()
    once_only = roundtrip_errors(model, pixels, twice=False, per_image=per_image)
    np.testing.assert_array_equal(once_only[:, 0], errors[:, 0])
    assert np.isnan(once_only[:, 1]).all()


@pytest.mark.skipif(not TAEF2.is_dir(), reason="assets/autoencoders/taef2 is missing")
def test_taef2_scores_match_a_direct_computation_and_a_reconstruction_scores_higher(tmp_path):
    folder = tmp_path / "autoencoder"
    materialise_autoencoder(AutoencoderConfig(kind="taesd", path=str(TAEF2)), folder)
    model, info = load_autoencoder(folder, device=CPU)
    assert info["class"] == "TinyAutoencoder"
    reals = [photo_crop("astronaut", 0, 0, 44, 52), photo_crop("coffee", 50, 120, 44, 52)]  # padded to 48 x 56
    fakes = [direct_roundtrip(model, real) for real in reals]  # what the reconstruct stage saves (mode)
    images = reals + fakes
    errors = roundtrip_errors(model, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), twice=True,
                              per_image=True)
    expected = np.array([direct_errors(model, image) for image in images])
    np.testing.assert_allclose(errors, expected, rtol=1e-3, atol=1e-2)
    e1, e2 = errors[:, 0], errors[:, 1]  # the scores' formulas, on the errors they are computed from (the two
    # computations above agree to 1e-3, which the log of a ratio of small errors can amplify past 1e-4)
    np.testing.assert_allclose(reference_score(errors, "distance"), -np.log(e1 + 1e-3), rtol=1e-4)
    np.testing.assert_allclose(reference_score(errors, "ratio"), np.log(e2 + 1e-3) - np.log(e1 + 1e-3), rtol=1e-4,
                               atol=1e-4)
    for score in ("distance", "ratio"):  # each fake (a reconstruction) above its own real
        values = reference_score(errors, score)
        assert (values[2:] > values[:2]).all(), (score, values)


def _write_split(folder: Path, split: str, model: torch.nn.Module, crops: list[np.ndarray]) -> None:
    """<split>.csv listing each crop (PNG) and its mode reconstruction, as the manifest stage would."""
    rows = []
    for index, real in enumerate(crops):
        stem = f"{split}{index}"
        real_path, fake_path = folder / "real" / f"{stem}.png", folder / "fake" / f"{stem}.png"
        for path, pixels in ((real_path, real), (fake_path, direct_roundtrip(model, real))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(pixels))
        rows.append({"stem": stem, "real_path": str(real_path), "fake_path": str(fake_path),
                     "height": real.shape[0], "width": real.shape[1]})
    write_csv(folder / "manifest" / f"{split}.csv", rows, ("stem", "real_path", "fake_path", "height", "width"))


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory, random_autoencoder) -> Path:
    """val (4 pairs) and test (3 pairs) from different photos, fakes made by the random autoencoder."""
    folder = tmp_path_factory.mktemp("reference")
    _, model = random_autoencoder
    _write_split(folder, "val", model, [photo_crop(name, 20 * i, 30 * i, 32, 40) for i, name in
                                        enumerate(("astronaut", "coffee", "chelsea", "rocket"))])
    _write_split(folder, "test", model, [photo_crop(name, 10 * i, 10 * i, 40, 32) for i, name in
                                         enumerate(("retina", "motorcycle_left", "grace_hopper"))])
    return folder


def test_thresholds_come_from_val_alone(small_manifest, random_autoencoder):
    autoencoder_dir, model = random_autoencoder
    config = ReferenceConfig(criterion="bacc", device="cpu")
    metrics, scored, info = run_reference(config, autoencoder_dir=autoencoder_dir,
                                          manifest_dir=small_manifest / "manifest")
    assert list(scored) == ["calibration", "test"] and info["round_trips_per_image"] == 2
    val = read_csv(small_manifest / "manifest" / "val.csv")
    images = [decode_rgb(Path(row[column])) for column in ("real_path", "fake_path") for row in val]
    errors = np.array([direct_errors(model, image) for image in images])
    labels = np.array([0] * len(val) + [1] * len(val))
    for name in ("distance", "ratio"):
        expected = select_threshold(labels, reference_score(errors, name), criterion="bacc")
        assert metrics[name]["threshold"] == pytest.approx(expected, abs=1e-3)
        for key in ("ap", "auc", "bacc", "real_acc", "fake_acc"):
            assert 0.0 <= metrics[name]["sets"]["test"][key] <= 1.0
            assert metrics[name][key] == metrics[name]["sets"]["test"][key]  # the mean of one set
    assert metrics["counts"]["calibration"] == {"n_real": 4, "n_fake": 4, "rejected": 0}
    # the test pairs swapped (reals labelled fake): the thresholds cannot move, the test numbers must
    rows = read_csv(small_manifest / "manifest" / "test.csv")
    swapped = [row | {"real_path": row["fake_path"], "fake_path": row["real_path"]} for row in rows]
    other = small_manifest / "swapped"
    write_csv(other / "val.csv", val, tuple(val[0]))
    write_csv(other / "test.csv", swapped, tuple(rows[0]))
    again, _, _ = run_reference(config, autoencoder_dir=autoencoder_dir, manifest_dir=other)
    for name in ("distance", "ratio"):
        assert again[name]["threshold"] == metrics[name]["threshold"]
        assert again[name]["calibration"] == metrics[name]["calibration"]
        assert again[name]["sets"]["test"]["auc"] == pytest.approx(1 - metrics[name]["sets"]["test"]["auc"])


def test_unreadable_images_are_rejected_with_a_stable_reason(small_manifest, random_autoencoder, tmp_path):
    autoencoder_dir, _ = random_autoencoder
    rows = read_csv(small_manifest / "manifest" / "test.csv")
    reals = tmp_path / "reals"
    reals.mkdir()
    for row in rows:
        (reals / Path(row["real_path"]).name).write_bytes(Path(row["real_path"]).read_bytes())
    (reals / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (reals / "tiny.png").write_bytes(encode_png(photo_crop("astronaut", 0, 0, 5, 3)))  # a 1 x 1 latent
    config = build_config(ReferenceConfig, {"scores": ["distance"], "device": "cpu", "test_sets": [
        {"name": "folders", "real": str(reals), "fake": str(Path(rows[0]["fake_path"]).parent / "test*.png")}],
        "watch": os.path.commonpath([tmp_path, small_manifest])}, section="reference")
    metrics, scored, info = run_reference(config, autoencoder_dir=autoencoder_dir,
                                          manifest_dir=small_manifest / "manifest", cache=tmp_path / "cache")
    assert info["round_trips_per_image"] == 1 and "ratio" not in metrics
    assert metrics["counts"]["folders"] == {"n_real": 3, "n_fake": 3, "rejected": 2, "n_real_matched": 3,
                                            "n_fake_matched": 3}
    out = tmp_path / "out" / "folders"
    write_reference_scores(out, scored["folders"], thresholds={"distance": metrics["distance"]["threshold"]})
    rejects = read_csv(out / "rejects.csv")
    assert [(r["path"], r["stage"]) for r in rejects] == [(str(reals / name), "reference:folders")
                                                          for name in ("broken.png", "tiny.png")]
    assert rejects[0]["reason"] and "0x" not in rejects[0]["reason"]  # no memory address: same bytes every run
    # the demo's narrow GroupNorm cannot normalise a 1 x 1 latent: that size is rejected, the run goes on
    assert rejects[1]["reason"].startswith("the autoencoder cannot round-trip a 3x5 image: ValueError: ")
    table = read_csv(out / "scores.csv")
    assert list(table[0]) == ["path", "label", "e1", "e2", "distance", "called_distance", "e1_matched",
                              "e2_matched", "distance_matched"]
    assert all(row["e2"] == row["e2_matched"] == "" for row in table)  # no second round trip when no score needs it
    threshold = metrics["distance"]["threshold"]
    assert all((row["called_distance"] == "fake") == (float(row["distance"]) > threshold) for row in table)


@pytest.mark.parametrize(("values", "key"), [
    ({"score": ["distance"]}, "reference.score"),
    ({"scores": ["aeroblade"]}, r"reference.scores\[0\]"),
    ({"scores": ["ratio", "ratio"]}, "reference.scores"),
    ({"scores": []}, "reference.scores"),
    ({"criterion": "best"}, "reference.criterion"),
    ({"target_fpr": 1.5}, "reference.target_fpr"),
    ({"test_sets": [{"name": "calibration", "split": "test"}]}, "reference.test_sets"),
    ({"test_sets": [{"name": "x", "split": "test", "real": "a"}]}, r"reference.test_sets\[0\]"),
])
def test_bad_params_fail_with_the_key(values, key):
    with pytest.raises(ParamsError, match=key):
        build_config(ReferenceConfig, values, section="reference")
