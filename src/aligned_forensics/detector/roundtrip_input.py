"""The round-trip input: where the autoencoder changes an image, once and twice, as local log energies.

A reconstruction is already close to what the autoencoder can produce, so a further round trip changes it about
as much as the one before; a real loses more in its first trip than in its second. The training-free `ratio`
score compares the two over the whole image; this filter hands the same comparison, pixel by pixel, to a
trainable network:
  e1 = mean over 3×3 of (x - AE(x))²,   e2 = mean over 3×3 of (AE(x) - AE(AE(x)))²   (8-bit levels, per channel)
  output = [log(1 + e1) - log(1 + e2),  log(1 + e2) / 4]                           (N, 6, H, W)
The first three channels carry the comparison, the last three how hard the content is to reconstruct at all.
Round trips use the posterior mode and are rounded to 8 bits, as a reconstruction written to disk is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aligned_forensics.autoencoder.autoencoder import describe_autoencoder
from aligned_forensics.autoencoder.roundtrip import roundtrip_on_device
from aligned_forensics.detector.preprocessing import IMAGENET_MEAN, IMAGENET_STD

ROUNDTRIP_CHANNELS = 6
CONTENT_SCALE = 4.0  # log(1 + e2) reaches ~8-10: brought to the range of the comparison channels


class RoundTripEnergy(nn.Module):
    """A fixed filter holding a frozen autoencoder: (N, 3, H, W) normalised images -> (N, 6, H, W) energy maps."""

    out_channels = ROUNDTRIP_CHANNELS

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.description = describe_autoencoder(autoencoder)  # checkpoints rebuild the layers from it
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> RoundTripEnergy:
        super().train(mode)
        self.autoencoder.eval()  # frozen: never in training mode (dropout, batch statistics)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            levels = (x.float() * self.std + self.mean).mul(255.0).round().clamp(0, 255).to(torch.uint8)
            once = roundtrip_on_device(self.autoencoder, levels, seeds=[0] * len(x), sample="mode")
            twice = roundtrip_on_device(self.autoencoder, once, seeds=[0] * len(x), sample="mode")
            return energy_maps(levels, once.clone(), twice.clone())


def local_energy(residual: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) differences -> (N, C, H, W) mean of their squares over each 3×3 neighbourhood."""
    return F.avg_pool2d(F.pad(residual.square(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def energy_maps(levels: torch.Tensor, once: torch.Tensor, twice: torch.Tensor) -> torch.Tensor:
    """Three (N, 3, H, W) uint8 images x, AE(x), AE(AE(x)) -> (N, 6, H, W) float32 (see the module's formula)."""
    x, a, b = (image.float() for image in (levels, once, twice))
    first, second = torch.log1p(local_energy(x - a)), torch.log1p(local_energy(a - b))
    return torch.cat([first - second, second / CONTENT_SCALE], dim=1)
