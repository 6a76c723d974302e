"""Format-matched scoring: what the scorer sees once the file format's cue is removed, checked on decoded pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, load_autoencoder, materialise_autoencoder
from aligned_forensics.common.compression import encode_like, read_compression
from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.image_sets import ResolvedSet, ScoreItem
from aligned_forensics.common.images import decode_rgb, encode_jpeg, encode_png
from aligned_forensics.common.params import build_config
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.evaluation.evaluate import EvaluateConfig
from aligned_forensics.evaluation.format_match import matched_metrics, plan_matching, quality_compression, reencode
from aligned_forensics.evaluation.reference import roundtrip_errors, score_items
from aligned_forensics.evaluation.report import format_share
from aligned_forensics.evaluation.scoring import score_with_matched

CPU = torch.device("cpu")


class Recording(torch.nn.Module):
    """A detector that keeps every image it is shown; its logit is the image's mean (a function of the pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B,)
        self.seen.extend(image.clone() for image in batch)
        return batch.double().flatten(1).mean(1)

    def times_seen(self, pixels: np.ndarray) -> int:
        expected = to_normalised_tensor(pixels)
        return sum(torch.equal(image, expected) for image in self.seen)


def _pixels(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    """(H, W, 3) uint8, smooth enough that JPEG compression differs from the original but keeps the picture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    return np.clip(smooth.astype(int) + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)


def _write(path: Path, data: bytes) -> ScoreItem:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    height, width = decode_rgb(data).shape[:2]
    return ScoreItem(str(path), height, width)


def _jpeg(pixels: np.ndarray, *, quality: int, subsampling: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


@pytest.fixture
def paired(tmp_path) -> ResolvedSet:
    """Four pairs: JPEG reals (three compressions, two sizes) with PNG fakes; one pair with its fake already a JPEG
    with exactly its real's compression (reconstruct.format: match), one lossless real."""
    reals, fakes = [], []
    for index, (quality, subsampling, shape) in enumerate([(90, 2, (24, 32)), (75, 0, (24, 32)), (60, 1, (16, 40))]):
        real = _write(tmp_path / "real" / f"{index}.jpg", _jpeg(_pixels(index, *shape), quality=quality,
                                                                 subsampling=subsampling))
        reals.append(real)
        fakes.append(_write(tmp_path / "fake" / f"{index}.png", encode_png(_pixels(100 + index, *shape))))
    matched_real = _write(tmp_path / "real" / "3.jpg", _jpeg(_pixels(3), quality=85, subsampling=2))
    already = encode_like(_pixels(103), read_compression(Path(matched_real.path)))
    reals.append(matched_real)
    fakes.append(_write(tmp_path / "fake" / "3.jpg", already))
    reals.append(_write(tmp_path / "real" / "4.png", encode_png(_pixels(4))))
    fakes.append(_write(tmp_path / "fake" / "4.png", encode_png(_pixels(104))))
    return ResolvedSet("test", reals, fakes, paired=True)


def _score(items: list[ScoreItem], model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    scores, matched, rejects = score_with_matched(model, items, protocol="full", crop_size=0, batch_size=2,
                                                  device=CPU, stage="evaluate:test")
    assert rejects == []
    return scores, matched


def test_each_fake_is_reencoded_with_its_own_reals_compression_and_reals_are_scored_once(paired):
    matching = plan_matching(paired, quality=96)
    assert [item.match is None for item in matching.reals] == [True] * 5  # reals as they are
    assert [item.match is None for item in matching.fakes] == [False, False, False, True, True]
    assert matching.unmatched == {}
    model = Recording()
    scores, matched = _score(matching.reals + matching.fakes, model)
    assert len(model.seen) == 10 + 3  # every image once as delivered, only the three re-encoded fakes again
    for real, fake, item in zip(paired.reals[:3], paired.fakes[:3], matching.fakes[:3], strict=True):
        delivered = decode_rgb(Path(fake.path))
        expected = decode_rgb(encode_like(delivered, read_compression(Path(real.path))))
        assert not np.array_equal(expected, delivered)  # the re-encoding changed the pixels
        assert np.array_equal(reencode(delivered, item.match), expected)
        assert model.times_seen(expected) == 1 and model.times_seen(delivered) == 1
    for real in paired.reals:
        assert model.times_seen(decode_rgb(Path(real.path))) == 1  # never twice
    np.testing.assert_array_equal(matched[:5], scores[:5])  # reals: the delivered score, reused
    np.testing.assert_array_equal(matched[8:], scores[8:])  # already matched / lossless real: as delivered
    assert (matched[5:8] != scores[5:8]).all()
    expected_logits = [to_normalised_tensor(decode_rgb(encode_like(decode_rgb(Path(fake.path)),
                                                                   read_compression(Path(real.path))))).double().mean()
                       for real, fake in zip(paired.reals[:3], paired.fakes[:3], strict=True)]
    np.testing.assert_allclose(matched[5:8], expected_logits, rtol=1e-6)


def test_an_already_matched_jpeg_fake_is_never_compressed_twice(paired):
    """The fake written by reconstruct.format: match has its real's tables: what the scorer sees is the file."""
    fake = paired.fakes[3]
    assert read_compression(Path(fake.path)) == read_compression(Path(paired.reals[3].path))
    matching = plan_matching(paired, quality=96)
    assert matching.fakes[3].match is None
    model = Recording()
    scores, matched = _score([matching.fakes[3]], model)
    delivered = decode_rgb(Path(fake.path))
    assert len(model.seen) == 1 and model.times_seen(delivered) == 1
    assert model.times_seen(reencode(delivered, read_compression(Path(fake.path)))) == 0  # not recompressed
    assert matched[0] == scores[0]


def test_unpaired_sets_reencode_both_classes_at_the_quality(tmp_path):
    reals = [_write(tmp_path / "real/a.jpg", _jpeg(_pixels(0), quality=90, subsampling=2)),
             _write(tmp_path / "real/b.png", encode_png(_pixels(1))),
             _write(tmp_path / "real/c.jpg", encode_jpeg(_pixels(2), quality=80))]  # already at the target
    fakes = [_write(tmp_path / "fake/a.png", encode_png(_pixels(10))),
             _write(tmp_path / "fake/b.webp", _webp(_pixels(11)))]
    resolved = ResolvedSet("bench", reals, fakes)
    matching = plan_matching(resolved, quality=80)
    target = quality_compression(80)
    assert [item.match for item in matching.reals + matching.fakes] == [target, target, None, target, target]
    model = Recording()
    scores, matched = _score(matching.reals + matching.fakes, model)
    assert len(model.seen) == 5 + 4
    for item in [*reals[:2], *fakes]:
        delivered = decode_rgb(Path(item.path))
        expected = decode_rgb(encode_jpeg(delivered, quality=80))  # Pillow's quality 80, 4:2:0
        assert model.times_seen(expected) == 1
    assert matched[2] == scores[2] and (np.delete(matched, 2) != np.delete(scores, 2)).all()


def _webp(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def test_a_real_whose_compression_cannot_be_recreated_leaves_its_fake_out_of_the_matched_figures(paired, tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(_pixels(5)).convert("CMYK").save(buffer, format="JPEG", quality=90)
    cmyk = _write(tmp_path / "real/cmyk.jpg", buffer.getvalue())
    resolved = ResolvedSet("test", [*paired.reals, cmyk], [*paired.fakes, paired.fakes[0]], paired=True)
    matching = plan_matching(resolved, quality=96)
    assert list(matching.unmatched) == [paired.fakes[0].path] and "CMYK" in matching.unmatched[paired.fakes[0].path]
    labels = np.array([0, 0, 1, 1])
    metrics = matched_metrics(labels, np.array([0.1, 0.2, 0.3, np.nan]), threshold=0.15, where="test set 'x'")
    assert metrics["ap_matched"] == 1.0 and metrics["n_fake_matched"] == 1 and metrics["bacc_matched"] == 0.75
    with pytest.raises(DataError, match="test set 'x': none of its fake images could be format-matched"):
        matched_metrics(labels, np.array([0.1, 0.2, np.nan, np.nan]), threshold=0.15, where="test set 'x'")


def test_the_reference_scores_the_reencoded_fake_from_the_same_decode(paired, tmp_path):
    folder = tmp_path / "autoencoder"
    materialise_autoencoder(AutoencoderConfig(kind="random", seed=0, channels=(8, 8, 8, 8)), folder)
    model = load_autoencoder(folder, device=CPU)[0]
    matching = plan_matching(paired, quality=96)
    items = matching.reals + matching.fakes
    errors, matched, rejects = score_items(model, items, twice=True, batch_size=2, per_image=True, device=CPU,
                                           stage="reference:test")
    assert rejects == []
    as_delivered = [item.match is None for item in items]
    np.testing.assert_array_equal(matched[as_delivered], errors[as_delivered])
    for index in (5, 6, 7):
        real, fake = paired.reals[index - 5], paired.fakes[index - 5]
        pixels = decode_rgb(encode_like(decode_rgb(Path(fake.path)), read_compression(Path(real.path))))
        direct = roundtrip_errors(model, torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None], twice=True,
                                  per_image=True)[0]
        np.testing.assert_allclose(matched[index], direct, rtol=1e-3, atol=1e-2)  # a pixel may round the other way
        assert not np.allclose(matched[index], errors[index])


def test_the_quality_is_checked_and_the_report_line_is_computed():
    with pytest.raises(ParamsError, match=r"evaluate\.format_match\.quality"):
        build_config(EvaluateConfig, {"format_match": {"quality": 0}}, section="evaluate")
    with pytest.raises(ParamsError, match=r"evaluate\.format_match\.size"):
        build_config(EvaluateConfig, {"format_match": {"size": 1}}, section="evaluate")
    assert format_share(0.894, 0.526) == ("AP 0.894 as delivered, 0.526 with the format cue removed: the file format "
                                          "accounts for 0.368 of the AP")
    assert format_share(0.5, 0.6).endswith("removing the format cue raises the AP by 0.100")
