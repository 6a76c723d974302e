"""TAESD-family weight pairs: layout, loading through the pipeline's folder, and real-weight quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, load_autoencoder, materialise_autoencoder
from aligned_forensics.autoencoder.roundtrip import downsampling_factor, roundtrip
from aligned_forensics.autoencoder.taesd import TinyAutoencoder, load_weight_pair
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.images import decode_rgb, psnr
from aligned_forensics.data.sources.samples import SAMPLE_PHOTOS, bundled_photo_path

TAEF2 = Path(__file__).resolve().parents[2] / "assets" / "autoencoders" / "taef2"
needs_taef2 = pytest.mark.skipif(not TAEF2.is_dir(), reason="assets/autoencoders/taef2 is missing")


def save_pair(model: TinyAutoencoder, prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in model.encoder.state_dict().items()}, f"{prefix}_encoder.pth")
    torch.save({k: v.half() for k, v in model.decoder.state_dict().items()}, f"{prefix}_decoder.pth")


@pytest.mark.parametrize(("latent_channels", "branch"), [(4, False), (16, False), (32, True)])
def test_a_weight_pair_round_trips_and_its_layout_is_detected(tmp_path, latent_channels, branch):
    torch.manual_seed(0)
    model = TinyAutoencoder(latent_channels, branch=branch)
    save_pair(model, tmp_path / "weights" / "taetest")
    loaded = load_weight_pair(tmp_path / "weights")  # a folder with one pair, or the prefix
    assert (loaded.latent_channels, loaded.branch) == (latent_channels, branch)
    materialise_autoencoder(AutoencoderConfig(kind="taesd", path=str(tmp_path / "weights" / "taetest")),
                            tmp_path / "ae")
    again, info = load_autoencoder(tmp_path / "ae", device=torch.device("cpu"))
    assert info["class"] == "TinyAutoencoder" and info["branch"] is branch
    for name, value in again.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name


def test_missing_or_ambiguous_weights_are_clear_errors(tmp_path):
    (tmp_path / "a_encoder.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"a_decoder.pth not found"):
        load_weight_pair(tmp_path / "a")
    (tmp_path / "b_encoder.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"exactly one '\*_encoder.pth'.*a_encoder.pth"):
        load_weight_pair(tmp_path)
    (tmp_path / "a_decoder.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable PyTorch state dict"):
        load_weight_pair(tmp_path / "a")


@needs_taef2
def test_taef2_reconstructs_a_bundled_photo_above_28_db():
    model = load_weight_pair(TAEF2).eval()
    assert (model.latent_channels, model.branch, downsampling_factor(model)) == (32, True, 8)
    photo = decode_rgb(bundled_photo_path(next(p for p in SAMPLE_PHOTOS if p.name == "astronaut")))[:200, :203]
    fake = roundtrip(model, torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None], seeds=[0],
                     sample="sample")[0].permute(1, 2, 0).numpy()
    assert fake.shape == photo.shape  # 200 x 203: padded to 208 x 208 and cropped back
    assert psnr(photo, fake) >= 28.0


def test_diffusers_tiny_and_kl_conventions_and_factors():
    import diffusers

    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                                     num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).eval()
    kl = diffusers.AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                                 up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8).eval()
    assert (downsampling_factor(tiny), downsampling_factor(kl)) == (8, 4)
    pixels = torch.randint(0, 256, (2, 3, 13, 18), dtype=torch.uint8)
    for model in (tiny, kl):
        out = roundtrip(model, pixels, seeds=[1, 2], sample="sample")
        assert out.shape == pixels.shape and out.dtype == torch.uint8
