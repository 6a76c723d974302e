"""Encode and decode a batch through any supported autoencoder family, with each family's conventions.

| family                                              | pixels in | latents                  | decoded |
| diffusers KL VAEs (LDM, SD 1/2, SDXL, SD3, FLUX),    | [-1, 1]   | posterior sample or mode | [-1, 1] |
|   AsymmetricAutoencoderKL                           |           |                          |         |
| diffusers AutoencoderTiny, VQModel, AutoencoderDC   | [-1, 1]   | deterministic            | [-1, 1] |
| TAESD weight pairs (TAESD … TAEF2)                  | [0, 1]    | deterministic, raw       | [0, 1]  |
Scaling/shift factors only matter to a diffusion model; an encode-decode round trip never applies them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from aligned_forensics.autoencoder.taesd import TinyAutoencoder


def downsampling_factor(model: torch.nn.Module) -> int:
    """How many pixels one latent covers per side (image sides are padded to a multiple of it)."""
    if isinstance(model, TinyAutoencoder):
        return model.downsampling_factor
    config = getattr(model, "config", {})
    if "spatial_compression_ratio" in config:  # AutoencoderDC
        return int(config["spatial_compression_ratio"])
    if "encoder_block_out_channels" in config:  # AutoencoderTiny: one stride-2 conv between blocks
        return 2 ** (len(config["encoder_block_out_channels"]) - 1)
    return 2 ** (len(config.get("block_out_channels", (0, 0, 0, 0))) - 1)


def posterior_noise(seeds: Sequence[int], shape: Sequence[int], *, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """(N, *shape) standard normal noise; row i comes from a CPU generator seeded with seeds[i] alone."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
                        for seed in seeds]).to(device, dtype)


def roundtrip(model: torch.nn.Module, pixels: torch.Tensor, *, seeds: Sequence[int], sample: str) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, H, W) uint8 on the CPU: encode, sample or take the mode, decode, round."""
    return roundtrip_on_device(model, pixels, seeds=seeds, sample=sample).cpu()


@torch.inference_mode()
def roundtrip_on_device(model: torch.nn.Module, pixels: torch.Tensor, *, seeds: Sequence[int],
                        sample: str) -> torch.Tensor:
    """roundtrip, left on the model's device (a detector's input filter keeps working on the GPU).

    Sides that are not a multiple of the model's factor are reflect-padded (edge-replicated when a side is not
    longer than its padding) and the output cropped back, so the fake has exactly the real's size."""
    height, width = pixels.shape[-2:]
    factor = downsampling_factor(model)
    dtype = next(model.parameters()).dtype
    tiny = isinstance(model, TinyAutoencoder)
    x = pixels.to(dtype=dtype).div(255.0) if tiny else pixels.to(dtype=dtype).div(127.5).sub(1.0)
    pad_bottom, pad_right = -height % factor, -width % factor
    if pad_bottom or pad_right:
        # reflection needs more pixels than the padding (e.g. a 12-pixel side padded to DC-AE's 32): else repeat edges
        mode = "reflect" if pad_bottom < height and pad_right < width else "replicate"
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode)
    x = x.contiguous(memory_format=torch.channels_last)
    if tiny:
        decoded = model.decoder(model.encoder(x)).float()  # (N, 3, H', W') in about [0, 1]
        levels = decoded.clamp(0, 1).mul(255.0)
    else:
        decoded = model.decode(_latents(model.encode(x), seeds=seeds, sample=sample)).sample.float()
        levels = decoded.clamp(-1, 1).add(1.0).mul(127.5)
    # round, not truncate: the original truncated, biasing every pixel down by half a level
    return levels[..., :height, :width].round().to(torch.uint8)


def _latents(encoded: object, *, seeds: Sequence[int], sample: str) -> torch.Tensor:
    if hasattr(encoded, "latent_dist"):  # KL VAEs: a diagonal Gaussian posterior
        posterior = encoded.latent_dist
        if sample == "mode":
            return posterior.mean
        noise = posterior_noise(seeds, posterior.mean.shape[1:], device=posterior.mean.device,
                                dtype=posterior.mean.dtype)
        return posterior.mean + posterior.std * noise
    for name in ("latents", "latent"):  # AutoencoderTiny and VQModel / AutoencoderDC
        if hasattr(encoded, name):
            return getattr(encoded, name)
    raise TypeError(f"unsupported encoder output {type(encoded).__name__}")
