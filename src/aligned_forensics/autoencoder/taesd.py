"""TAESD-family tiny autoencoders from their original weight pairs (`*_encoder.pth`, `*_decoder.pth`).

The layout follows madebyollin/taesd (state-dict keys are `Sequential` indices such as `1.conv.0.weight`).
TAEF2 adds a GroupNorm branch to the encoder's last three and the decoder's first three blocks (keys
`…pool.{0,1,3}…`); it is detected from the weights. Convention: images in [0, 1], raw latents.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aligned_forensics.common.errors import UserError

WIDTH = 64  # every TAESD hidden layer has 64 channels
BRANCH_WIDTH = 256


def conv(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)  # type: ignore[arg-type]


class Clamp(nn.Module):
    """Soft clamp of latents to about [-3, 3]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus identity, then ReLU; TAEF2 blocks first add a 1x1 GroupNorm branch."""

    def __init__(self, *, branch: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv(WIDTH, WIDTH), nn.ReLU(), conv(WIDTH, WIDTH), nn.ReLU(), conv(WIDTH, WIDTH))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = nn.Sequential(nn.Conv2d(WIDTH, BRANCH_WIDTH, 1, bias=False), nn.GroupNorm(4, BRANCH_WIDTH),
                                  nn.ReLU(), nn.Conv2d(BRANCH_WIDTH, WIDTH, 1, bias=False)) if branch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder(latent_channels: int, *, branch: bool) -> nn.Sequential:
    """(N, 3, H, W) in [0, 1] -> (N, latent_channels, H/8, W/8)."""
    layers: list[nn.Module] = [conv(3, WIDTH), Block()]
    for stage in range(3):
        last = stage == 2
        layers += [conv(WIDTH, WIDTH, stride=2, bias=False), *(Block(branch=branch and last) for _ in range(3))]
    return nn.Sequential(*layers, conv(WIDTH, latent_channels))


def build_decoder(latent_channels: int, *, branch: bool) -> nn.Sequential:
    """(N, latent_channels, h, w) -> (N, 3, 8h, 8w), roughly [0, 1] (clamp after)."""
    layers: list[nn.Module] = [Clamp(), conv(latent_channels, WIDTH), nn.ReLU()]
    for stage in range(3):
        first = stage == 0
        layers += [*(Block(branch=branch and first) for _ in range(3)), nn.Upsample(scale_factor=2),
                   conv(WIDTH, WIDTH, bias=False)]
    return nn.Sequential(*layers, Block(), conv(WIDTH, 3))


class TinyAutoencoder(nn.Module):
    """A TAESD / TAESDXL / TAESD3 / TAEF1 / TAEF2 encoder-decoder pair."""

    downsampling_factor = 8

    def __init__(self, latent_channels: int, *, branch: bool) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.branch = branch
        self.encoder = build_encoder(latent_channels, branch=branch)
        self.decoder = build_decoder(latent_channels, branch=branch)


def weight_pair(path: Path) -> tuple[Path, Path]:
    """The (encoder, decoder) files for a folder holding one `*_encoder.pth` + `*_decoder.pth`, or a prefix."""
    path = Path(path).expanduser()
    if path.is_dir():
        encoders = sorted(path.glob("*_encoder.pth"))
        if len(encoders) != 1:
            raise UserError(f"{path} should hold exactly one '*_encoder.pth' (and its '*_decoder.pth'); found "
                            f"{[p.name for p in encoders] or 'none'}; set autoencoder.path to '<folder>/<name>' "
                            "to pick one, e.g. weights/taef2")
        prefix = encoders[0].with_name(encoders[0].name.removesuffix("_encoder.pth"))
    else:
        prefix = path
    encoder, decoder = Path(f"{prefix}_encoder.pth"), Path(f"{prefix}_decoder.pth")
    for file in (encoder, decoder):
        if not file.is_file():
            raise UserError(f"TAESD weight file {file} not found (autoencoder.kind=taesd expects "
                            f"'{prefix.name}_encoder.pth' and '{prefix.name}_decoder.pth' in {prefix.parent})")
    return encoder, decoder


def load_weight_pair(path: Path) -> TinyAutoencoder:
    """Build the model the weights describe (latent channels, TAEF2 branch) and load them strictly."""
    encoder_file, decoder_file = weight_pair(path)
    encoder_state = _state_dict(encoder_file)
    decoder_state = _state_dict(decoder_file)
    last_conv = max((k for k in encoder_state if k.endswith(".weight") and "." not in k.removesuffix(".weight")),
                    key=lambda k: int(k.split(".")[0]))
    latent_channels = encoder_state[last_conv].shape[0]
    branch = any(".pool." in key for key in encoder_state)
    model = TinyAutoencoder(latent_channels, branch=branch)
    for part, state, file in ((model.encoder, encoder_state, encoder_file), (model.decoder, decoder_state,
                                                                              decoder_file)):
        try:
            part.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        except RuntimeError as error:
            raise UserError(f"{file} does not match the TAESD layout: {str(error).splitlines()[0]}") from None
    return model


def _state_dict(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)  # no pickle code execution
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise UserError(f"{file} is not a readable PyTorch state dict: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state dict")
    return state
