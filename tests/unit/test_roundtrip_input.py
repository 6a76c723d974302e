"""The `roundtrip` input filter: the energy maps it feeds a detector, its embedded autoencoder, filter_once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from aligned_forensics.autoencoder.autoencoder import build_random_autoencoder, describe_autoencoder
from aligned_forensics.autoencoder.roundtrip import roundtrip
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.images import encode_png
from aligned_forensics.detector.checkpoints import load_detector, save_checkpoint
from aligned_forensics.detector.models import create_detector, prefiltered_inputs
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.detector.roundtrip_input import energy_maps
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.augment_ops import turn_and_crop
from aligned_forensics.training.dataset import SyncedPairs, ValidationItems
from aligned_forensics.training.filter_once import FilterCache, check_geometric


@pytest.fixture(scope="module")
def autoencoder() -> torch.nn.Module:
    return build_random_autoencoder(seed=0, channels=(8, 8, 8, 8), latent_channels=4).eval()


def _images(count: int, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _direct_maps(pixels: np.ndarray, once: np.ndarray, twice: np.ndarray) -> np.ndarray:
    """The module docstring's formula, in numpy: (H, W, 3) uint8 x3 -> (H, W, 6)."""
    def energy(difference: np.ndarray) -> np.ndarray:
        padded = np.pad(difference.astype(np.float64) ** 2, ((1, 1), (1, 1), (0, 0)), mode="edge")
        height, width = difference.shape[:2]
        return sum(padded[i:i + height, j:j + width] for i in range(3) for j in range(3)) / 9.0
    first = np.log1p(energy(pixels.astype(np.float64) - once))
    second = np.log1p(energy(once.astype(np.float64) - twice))
    return np.concatenate([first - second, second / 4.0], axis=2)


def test_the_filter_computes_the_documented_energy_maps_of_two_round_trips(autoencoder) -> None:
    pixels = _images(2)
    model = create_detector("cnn6", pretrained="none", seed=0, input_filter="roundtrip", autoencoder=autoencoder)
    batch = torch.stack([to_normalised_tensor(image) for image in pixels])
    output = model.input_filter(batch).numpy()  # (2, 6, H, W)
    assert output.shape == (2, 6, 24, 32)
    as_uint8 = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    once = roundtrip(autoencoder, as_uint8, seeds=[0, 0], sample="mode")
    twice = roundtrip(autoencoder, once, seeds=[0, 0], sample="mode")
    for i in range(2):
        expected = _direct_maps(pixels[i], once[i].permute(1, 2, 0).numpy(), twice[i].permute(1, 2, 0).numpy())
        np.testing.assert_allclose(output[i].transpose(1, 2, 0), expected, atol=1e-4)
    # energy_maps alone: a fixed point of the autoencoder (x == AE(x) == AE(AE(x))) gives zeros everywhere
    same = torch.full((1, 3, 5, 5), 7, dtype=torch.uint8)
    assert torch.count_nonzero(energy_maps(same, same, same)) == 0


def test_the_embedded_autoencoder_is_frozen_saved_and_restored(autoencoder, tmp_path) -> None:
    model = create_detector("cnn6", pretrained="none", seed=3, input_filter="roundtrip", autoencoder=autoencoder)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and not any(name.startswith("input_filter.") for name in trainable)
    model.train()
    assert not model.input_filter.autoencoder.training  # frozen layers never switch to training mode
    save_checkpoint(tmp_path / "m.pt", model, config={"augment": {"crop_size": 16}}, epoch=1, metrics={})
    loaded, payload = load_detector(tmp_path / "m.pt", device=torch.device("cpu"))
    assert payload["autoencoder"] == describe_autoencoder(autoencoder)
    batch = torch.stack([to_normalised_tensor(image) for image in _images(3, seed=1)])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=1e-6)


def test_a_resnet_takes_the_six_channels_too(autoencoder) -> None:
    model = create_detector("res18", pretrained="none", seed=0, input_filter="roundtrip", autoencoder=autoencoder)
    assert model.conv1.in_channels == 6
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1,)


def test_roundtrip_without_an_autoencoder_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="needs the pipeline's autoencoder"):
        create_detector("cnn6", pretrained="none", seed=0, input_filter="roundtrip")


def test_filter_once_holds_the_filter_of_each_whole_image_and_serves_turned_crops(autoencoder, tmp_path) -> None:
    model = create_detector("cnn6", pretrained="none", seed=0, input_filter="roundtrip", autoencoder=autoencoder)
    paths = []
    for i, image in enumerate(_images(4, 20, 28, seed=2)):
        paths.append(str(tmp_path / f"{i}.png"))
        (tmp_path / f"{i}.png").write_bytes(encode_png(image))
    maps = FilterCache(model, device=torch.device("cpu")).fill(paths)
    with torch.no_grad():
        direct = model.input_filter(torch.stack([to_normalised_tensor(image) for image in _images(4, 20, 28, seed=2)]))
    for i, path in enumerate(paths):
        np.testing.assert_allclose(maps[path], direct[i].permute(1, 2, 0).numpy(), atol=1e-5)
    augment = AugmentConfig(crop_size=16, resized_crop_prob=0, jitter_prob=0, grayscale_prob=0, cutout_prob=0,
                            noise_prob=0, blur_prob=0, jpeg_prob=0)
    pairs = SyncedPairs([(paths[0], paths[1])], augment, seed=5, maps=maps)
    real, fake = pairs[(2, 0)]
    draw = draw_augmentation(augment, np.random.default_rng([5, 2, 0]))
    np.testing.assert_array_equal(real.numpy(), turn_and_crop(maps[paths[0]], draw, crop_size=16).transpose(2, 0, 1))
    np.testing.assert_array_equal(fake.numpy(), turn_and_crop(maps[paths[1]], draw, crop_size=16).transpose(2, 0, 1))
    image, label = ValidationItems([paths[2]], [], crop_size=16, maps=maps)[0]
    assert image.shape == (6, 16, 16) and label == 0
    with prefiltered_inputs(model), torch.no_grad():  # the network alone, fed the held maps
        assert model.eval()(real[None]).shape == (1,)
    assert not model.prefiltered


def test_filter_once_refuses_augmentation_that_changes_pixel_values() -> None:
    geometric = AugmentConfig(crop_size=16, resized_crop_prob=0, jitter_prob=0, grayscale_prob=0, cutout_prob=0,
                              noise_prob=0, blur_prob=0, jpeg_prob=0)
    check_geometric(geometric, section="train")
    with pytest.raises(UserError, match=r"jpeg_prob.*train.filter_once: false"):
        check_geometric(dataclasses.replace(geometric, jpeg_prob=0.5), section="train")
