"""Stay-Positive (Rajan & Lee, ICML 2025): retrain a trained detector's last layer with weights >= 0.

score = wᵀf(x) + b with f(x) >= 0 (pooled ReLU features) and w >= 0, so no feature can push an image
towards "real": a real-image pattern (JPEG traces, clean text) can no longer hide a generator's artifacts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from aligned_forensics.common.errors import ParamsError, UserError
from aligned_forensics.common.io import file_sha256
from aligned_forensics.common.params import build_config, require
from aligned_forensics.detector.checkpoints import load_detector
from aligned_forensics.detector.models import AnyDetector
from aligned_forensics.training.train import RECORD_KEYS, LoopConfig, Ranks, Retrain, TrainConfig, train_detector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StayPositiveConfig(LoopConfig):
    """params.yaml `stay_positive`; defaults are the paper's second stage (batch 512, patience 5, seed 14)."""

    section: ClassVar[str] = "stay_positive"
    seed: int = 14
    batch_size: int = 512
    patience: int = 5
    unfreeze_last_blocks: int = 0  # also train the last k residual blocks (0 = the final layer only)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.unfreeze_last_blocks >= 0, "stay_positive.unfreeze_last_blocks", "an integer >= 0",
                self.unfreeze_last_blocks)


def prepare_model(model: AnyDetector, *, unfreeze_last_blocks: int) -> AnyDetector:
    """Freeze everything, zero the final layer and let it (and the last k residual blocks) learn; dropout 0."""
    blocks = model.residual_blocks()
    if unfreeze_last_blocks > len(blocks):
        raise ParamsError(f"params key 'stay_positive.unfreeze_last_blocks': expected at most {len(blocks)} (the "
                          f"residual blocks of a {model.arch}), got {unfreeze_last_blocks}")
    model.requires_grad_(False)
    with torch.no_grad():
        model.fc.weight.zero_()  # the paper starts from zero: every weight must earn its positive value
        model.fc.bias.zero_()
    model.dropout.p = 0.0
    for module in [model.fc, *unfrozen_blocks(model, unfreeze_last_blocks)]:
        module.requires_grad_(True)
    return model


def unfrozen_blocks(model: AnyDetector, count: int) -> list[torch.nn.Module]:
    """The last `count` residual blocks (none for 0)."""
    blocks = model.residual_blocks()
    return blocks[len(blocks) - count:]


def frozen_in_eval(count: int):
    """A train-mode setter: the frozen backbone (batch-norm statistics too) stays in eval mode."""
    def train_mode(model: torch.nn.Module) -> None:
        model = getattr(model, "module", model)  # unwrap DistributedDataParallel
        model.eval()
        for block in unfrozen_blocks(model, count):
            block.train()

    return train_mode


def project_nonnegative(model: torch.nn.Module) -> None:
    """w <- max(w, 0) on the final layer after every optimiser step; the bias stays free."""
    with torch.no_grad():
        getattr(model, "module", model).fc.weight.clamp_(min=0)


def train_stay_positive(config: StayPositiveConfig, *, model_path: Path, train_manifest: Path, val_manifest: Path,
                        model_dir: Path, live: Any, ranks: Ranks | None = None, device: torch.device | None = None,
                        arch: str | None = None) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Retrain `model_path`'s final layer under w >= 0 with the train loop (same augmentation as the input).

    `arch` is the architecture of a model file that records none (a released checkpoint)."""
    model, payload = load_detector(model_path, device=torch.device("cpu"), arch=arch)
    model = prepare_model(model, unfreeze_last_blocks=config.unfreeze_last_blocks)
    shared = {field.name: getattr(config, field.name) for field in fields(LoopConfig)}
    trained = input_train_config(payload, arch=model.arch, source=model_path)
    if trained.pairing != config.pairing:  # a valid comparison, but easy to get by leaving the default
        log.warning("%s was trained with pairing %s; stay_positive.pairing %s retrains it on %s data", model_path,
                    trained.pairing, config.pairing, config.pairing)
    loop = replace(trained, **shared)
    record = {"from": str(model_path), "from_sha256": file_sha256(model_path),
              "unfreeze_last_blocks": config.unfreeze_last_blocks, "constraint": "fc.weight >= 0",
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    log.info("stay-positive: %s trainable parameters (final layer%s) of %s, from %s",
             f"{record['trainable_parameters']:,}",
             f" + last {config.unfreeze_last_blocks} residual block(s)" if config.unfreeze_last_blocks else "",
             model.arch, model_path)
    retrain = Retrain(model=model, record=record, train_mode=frozen_in_eval(config.unfreeze_last_blocks),
                      after_step=project_nonnegative)
    return train_detector(loop, train_manifest=train_manifest, val_manifest=val_manifest, model_dir=model_dir,
                          live=live, ranks=ranks or Ranks(), device=device, retrain=retrain)


def input_train_config(payload: dict[str, Any], *, arch: str, source: Path) -> TrainConfig:
    """The input model's own train config (its augmentation and crop), or the paper's for a released checkpoint."""
    recorded = {key: value for key, value in payload.get("config", {}).items()
                if key not in RECORD_KEYS}  # records beside the params, not params
    try:
        return build_config(TrainConfig, recorded | {"arch": arch}, section=f"train (recorded in {source})")
    except ParamsError as error:
        raise UserError(f"{source} records a train config this version cannot read ({error}); retrain it with "
                        "`dvc repro train`") from None


def inspect_weights(base: torch.nn.Linear, positive: torch.nn.Linear, *, top: int = 20
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(counts of zero / positive final-layer weights beside the input model's signs, the `top` largest)."""
    weights = positive.weight.detach().double().reshape(-1).numpy()  # (C,)
    base_weights = base.weight.detach().double().reshape(-1).numpy()  # (C,)
    summary = {"features": int(weights.size), "positive": int((weights > 0).sum()), "zero": int((weights == 0).sum()),
               "negative": int((weights < 0).sum()), "bias": float(positive.bias.item()),
               "largest_weight": float(weights.max()), "weight_sum": float(weights.sum()),
               "base_positive": int((base_weights > 0).sum()), "base_negative": int((base_weights < 0).sum()),
               "base_bias": float(base.bias.item())}
    order = np.argsort(-weights, kind="stable")[:top]
    ranking = [{"rank": rank + 1, "feature": int(index), "weight": round(float(weights[index]), 6),
                "base_weight": round(float(base_weights[index]), 6)} for rank, index in enumerate(order)]
    return summary, ranking
