"""ResNet detectors with one logit (positive = fake), in torchvision's state-dict layout."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from aligned_forensics.common.errors import UserError

Architecture = Literal["res50nodown", "res50", "res18nodown", "res18"]
Pretrained = Literal["none", "imagenet"]

# name -> (block, layers, stem stride, dropout before the final linear layer)
ARCHITECTURES: dict[str, tuple[type, list[int], int, float]] = {
    "res50nodown": (Bottleneck, [3, 4, 6, 3], 1, 0.5),  # the paper's detector: total stride 8
    "res50": (Bottleneck, [3, 4, 6, 3], 2, 0.0),
    "res18nodown": (BasicBlock, [2, 2, 2, 2], 1, 0.5),
    "res18": (BasicBlock, [2, 2, 2, 2], 2, 0.0),  # the CPU demo's detector
}
IMAGENET_WEIGHTS = {"res50nodown": ResNet50_Weights.IMAGENET1K_V1, "res50": ResNet50_Weights.IMAGENET1K_V1,
                    "res18nodown": ResNet18_Weights.IMAGENET1K_V1, "res18": ResNet18_Weights.IMAGENET1K_V1}


class Detector(ResNet):
    """ResNet → global average pool → dropout → Linear(features, 1); forward returns (N,) logits."""

    def __init__(self, arch: str) -> None:
        block, layers, stem_stride, dropout = ARCHITECTURES[arch]
        super().__init__(block, layers)
        self.arch = arch
        # "nodown": conv1 and max-pool at stride 1 keep high-frequency traces (stride 8 instead of 32)
        self.conv1.stride = (stem_stride, stem_stride)
        self.maxpool.stride = stem_stride
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.fc.in_features, 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C, H/stride, W/stride) last residual map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C) features, >= 0 (each block ends in a ReLU, then an average)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C) pooled features -> (N,) logits: wᵀf + b."""
        return self.fc(self.dropout(pooled)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))

    def residual_blocks(self) -> list[nn.Module]:
        """Every residual block, input to output (16 in a ResNet-50, 8 in a ResNet-18)."""
        return [block for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for block in layer]


def create_detector(arch: str, *, pretrained: str, seed: int) -> Detector:
    """Build a detector; `pretrained='imagenet'` loads torchvision's ImageNet weights (all but fc)."""
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    torch.manual_seed(seed)  # torchvision initialises from the global generator
    model = Detector(arch)
    if pretrained == "imagenet":
        state = _imagenet_state_dict(arch)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if set(missing) != {"fc.weight", "fc.bias"} or unexpected:
            raise UserError(f"ImageNet weights for {arch} do not fit: missing {missing}, unexpected {unexpected}")
    return model


def _imagenet_state_dict(arch: str) -> dict[str, Any]:
    weights = IMAGENET_WEIGHTS[arch]
    try:
        return weights.get_state_dict(progress=True)
    except Exception as error:  # URLError offline, HTTP errors, a corrupt cache file
        raise UserError(
            f"could not load ImageNet weights for {arch} ({weights.url}): {type(error).__name__}: {error}. "
            f"Download them once on a machine with internet (they are cached under $TORCH_HOME/hub/checkpoints), "
            f"or set train.pretrained: none"
        ) from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
