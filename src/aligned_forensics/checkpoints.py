"""Detector checkpoints that carry their architecture and preprocessing, loaded safely (weights_only)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from aligned_forensics.errors import UserError
from aligned_forensics.io import atomic_write_bytes
from aligned_forensics.models import IMAGENET_MEAN, IMAGENET_STD, Detector, create_detector

FORMAT = "aligned-forensics-detector/1"


def save_checkpoint(path: Path, model: Detector, *, config: dict[str, Any], epoch: int,
                    metrics: dict[str, float]) -> None:
    """Write {format, arch, state_dict, preprocessing, config, epoch, metrics} atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "arch": model.arch, "state_dict": state, "config": config, "epoch": epoch,
               "metrics": metrics, "preprocessing": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                                     "train_crop": config["augment"]["crop_size"]}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_detector(path: Path, *, device: torch.device) -> tuple[Detector, dict[str, Any]]:
    """Load a checkpoint written by save_checkpoint, in eval mode on `device`; return (model, payload)."""
    if not Path(path).is_file():
        raise UserError(f"{path} not found: run `dvc repro train` first")
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickle code execution
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an aligned-forensics detector checkpoint (format {FORMAT!r})")
    model = create_detector(payload["arch"], pretrained="none", seed=0)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload
