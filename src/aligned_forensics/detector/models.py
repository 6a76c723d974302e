"""Detectors with one logit (positive = fake): ResNets in torchvision's state-dict layout, and a small CNN.

Any detector may see its input through a fixed filter first (`input_filter`, nothing trained): `highpass` keeps
only the residual an image's 3×3 neighbourhood does not predict; `roundtrip` holds the pipeline's frozen
autoencoder and shows the network where one and two round trips through it change the image
(detector/roundtrip_input.py), the trace every reconstruction carries whatever its file format.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import file_sha256
from aligned_forensics.detector.roundtrip_input import RoundTripEnergy

Architecture = Literal["res50nodown", "res50", "res18nodown", "res18", "cnn6"]
Pretrained = Literal["none", "imagenet"]
InputFilter = Literal["none", "highpass", "roundtrip"]
INPUT_FILTERS = ("none", "highpass", "roundtrip")
HIGHPASS_GAIN = 4.0  # residuals are small: scaled so the first layer sees values of the order of the input
CNN6_WIDTH = 32

# name -> (block, layers, stem stride, dropout before the final linear layer)
ARCHITECTURES: dict[str, tuple[type, list[int], int, float]] = {
    "res50nodown": (Bottleneck, [3, 4, 6, 3], 1, 0.5),  # the paper's detector: total stride 8
    "res50": (Bottleneck, [3, 4, 6, 3], 2, 0.0),
    "res18nodown": (BasicBlock, [2, 2, 2, 2], 1, 0.5),
    "res18": (BasicBlock, [2, 2, 2, 2], 2, 0.0),  # the tests' small ResNet (the CPU demo trains cnn6)
}
IMAGENET_WEIGHTS = {"res50nodown": ResNet50_Weights.IMAGENET1K_V1, "res50": ResNet50_Weights.IMAGENET1K_V1,
                    "res18nodown": ResNet18_Weights.IMAGENET1K_V1, "res18": ResNet18_Weights.IMAGENET1K_V1}


class HighPass(nn.Module):
    """x - mean of its 3×3 neighbourhood (reflect-padded), per channel, times HIGHPASS_GAIN; no weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, H, W)
        return HIGHPASS_GAIN * (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1))


def make_input_filter(name: str, *, autoencoder: nn.Module | None = None) -> nn.Module:
    """The fixed module a detector applies to its input first (`roundtrip` embeds `autoencoder`)."""
    if name not in INPUT_FILTERS:
        raise UserError(f"unknown input filter {name!r}; expected one of {list(INPUT_FILTERS)}")
    if name == "roundtrip":
        if autoencoder is None:
            raise UserError("input filter 'roundtrip' needs the pipeline's autoencoder (the train stage's "
                            "--autoencoder data/autoencoder); none was given")
        return RoundTripEnergy(autoencoder)
    return HighPass() if name == "highpass" else nn.Identity()


def input_channels(input_filter: nn.Module) -> int:
    """How many channels the network's first layer receives from the filter (3 for images)."""
    return getattr(input_filter, "out_channels", 3)


@contextlib.contextmanager
def prefiltered_inputs(model: nn.Module) -> Iterator[None]:
    """Within the block the detector takes its filter's output, not images (the filter ran once beforehand)."""
    detector = getattr(model, "module", model)  # unwrap DistributedDataParallel
    detector.prefiltered = True
    try:
        yield
    finally:
        detector.prefiltered = False


class DetectorHead:
    """What every detector shares: pooled features (>= 0) -> dropout -> Linear(C, 1) -> (N,) logits."""

    arch: str
    input_filter_name: str
    input_filter: nn.Module
    fc: nn.Linear
    dropout: nn.Dropout
    prefiltered: bool = False  # set by prefiltered_inputs: forward then takes the filter's output

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) filtered input -> (N, C) features, >= 0 (each block ends in a ReLU, then an average)."""
        # a mean, not AdaptiveAvgPool2d: its CUDA backward has no deterministic kernel (train.deterministic)
        return self.features(x).mean(dim=(2, 3))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C) pooled features -> (N,) logits: wᵀf + b."""
        return self.fc(self.dropout(pooled)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images (or, when prefiltered, their filter's output) -> (N,) logits."""
        return self.head(self.pooled(x if self.prefiltered else self.input_filter(x)))


class Detector(DetectorHead, ResNet):
    """ResNet → global average pool → dropout → Linear(features, 1); forward returns (N,) logits."""

    def __init__(self, arch: str, *, input_filter: str = "none", autoencoder: nn.Module | None = None) -> None:
        block, layers, stem_stride, dropout = ARCHITECTURES[arch]
        super().__init__(block, layers)
        self.arch = arch
        self.input_filter_name = input_filter
        self.input_filter = make_input_filter(input_filter, autoencoder=autoencoder)
        if input_channels(self.input_filter) != 3:
            self.conv1 = nn.Conv2d(input_channels(self.input_filter), 64, 7, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        # "nodown": conv1 and max-pool at stride 1 keep high-frequency traces (stride 8 instead of 32)
        self.conv1.stride = (stem_stride, stem_stride)
        self.maxpool.stride = stem_stride
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.fc.in_features, 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) filtered input -> (N, C, H/stride, W/stride) last residual map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def residual_blocks(self) -> list[nn.Module]:
        """Every residual block, input to output (16 in a ResNet-50, 8 in a ResNet-18)."""
        return [block for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for block in layer]


class SmallDetector(DetectorHead, nn.Module):
    """`cnn6`: six 3×3 conv + BN + ReLU blocks (widths W, W, W, 2W at stride 2, 2W, 2W), average pool, one logit.

    Full resolution until the fourth block and a receptive field of 13 pixels: it looks at local pixel statistics
    (an autoencoder's traces), not at objects; 0.1 M parameters, trainable on a laptop CPU in minutes."""

    def __init__(self, arch: str = "cnn6", *, input_filter: str = "none", width: int = CNN6_WIDTH,
                 autoencoder: nn.Module | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.input_filter_name = input_filter
        self.input_filter = make_input_filter(input_filter, autoencoder=autoencoder)
        widths = [(input_channels(self.input_filter), width, 1), (width, width, 1), (width, width, 1),
                  (width, 2 * width, 2), (2 * width, 2 * width, 1), (2 * width, 2 * width, 1)]
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                                                    nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
                                      for c_in, c_out, stride in widths])
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(2 * width, 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) filtered input -> (N, 2W, H/2, W/2)."""
        return self.blocks(x)

    def residual_blocks(self) -> list[nn.Module]:
        """The six conv blocks, input to output (stay_positive's unfreeze_last_blocks counts these)."""
        return list(self.blocks)


AnyDetector = Detector | SmallDetector


def create_detector(arch: str, *, pretrained: str, seed: int, input_filter: str = "none",
                    autoencoder: nn.Module | None = None) -> AnyDetector:
    """Build a detector; `pretrained='imagenet'` loads torchvision's ImageNet weights (all but fc).

    `autoencoder`: the frozen model the `roundtrip` input filter embeds (ignored by the other filters)."""
    if arch not in (*ARCHITECTURES, "cnn6"):
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted([*ARCHITECTURES, 'cnn6'])}")
    torch.manual_seed(seed)  # torchvision initialises from the global generator
    if arch == "cnn6":
        if pretrained == "imagenet":
            raise UserError("train.pretrained: imagenet needs a ResNet arch; cnn6 has no ImageNet weights "
                            "(set train.pretrained: none)")
        return SmallDetector(arch, input_filter=input_filter, autoencoder=autoencoder)
    model = Detector(arch, input_filter=input_filter, autoencoder=autoencoder)
    if pretrained == "imagenet":
        state, model.imagenet_sha256 = _imagenet_state_dict(arch)  # recorded in the checkpoint's config
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        channels = model.conv1.in_channels
        if channels != 3:  # a filter with more channels: each group of three starts from the RGB filters, shared
            state["conv1.weight"] = state["conv1.weight"].repeat(1, channels // 3, 1, 1) * (3 / channels)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if set(missing) != {"fc.weight", "fc.bias"} or unexpected:
            raise UserError(f"ImageNet weights for {arch} do not fit: missing {missing}, unexpected {unexpected}")
    return model


def _imagenet_state_dict(arch: str) -> tuple[dict[str, Any], str]:
    """(state dict, full sha256) of torchvision's ImageNet weights for `arch`: hash-checked, loaded without code.

    The check: the file's sha256 starts with the prefix torchvision puts in its name (`resnet50-0676ba61.pth`).

    Not `weights.get_state_dict()`: torch.hub loads a cached file unchecked and with weights_only=False, so a
    replaced file in $TORCH_HOME/hub/checkpoints would run code."""
    url = IMAGENET_WEIGHTS[arch].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    prefix = imagenet_hash_prefix(url)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch's download checks the prefix too, before the file gets its final name
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=True)
        except Exception as error:  # URLError offline, HTTP errors, a hash mismatch mid-download
            raise UserError(
                f"could not download ImageNet weights for {arch} ({url}): {type(error).__name__}: {error}. "
                f"Download them once on a machine with internet (they are cached as {path}), or set "
                f"train.pretrained: none") from None
    digest = file_sha256(path)
    if not digest.startswith(prefix):
        raise UserError(f"ImageNet weights {path} do not match the hash torchvision publishes for them: sha256 "
                        f"{digest} does not start with {prefix} (from {url}); the file is corrupt or was replaced, "
                        f"and was not loaded. Delete it (rm '{path}') to download it afresh")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle naming code, though its hash matched: refused, never run
        # torch's own text advises weights_only=False: quote only what it refused
        found = re.search(r"Unsupported global: GLOBAL [\w.]+", str(error))
        raise UserError(f"refused to load ImageNet weights {path}: {found.group(0) if found else type(error).__name__}"
                        f" (pickled objects other than tensors could run code); nothing in it was run. Delete it "
                        f"(rm '{path}')") from None
    if not isinstance(state, dict):
        raise UserError(f"ImageNet weights {path} hold a {type(state).__name__}, not a state dict; delete it")
    return state, digest


def imagenet_hash_prefix(url: str) -> str:
    """The sha256 prefix torchvision puts in a weight file's name: `resnet50-0676ba61.pth` -> '0676ba61'."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", urlparse(url).path)
    if not match:
        raise UserError(f"{url} names no sha256 prefix (<name>-<hex>.pth), so it cannot be verified")
    return match.group(1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
