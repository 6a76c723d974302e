"""`train.init_from`: start training from the weights of any checkpoint we load (ours or a released one)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import file_sha256
from aligned_forensics.detector.checkpoints import load_detector

log = logging.getLogger(__name__)


def initial_model(init_from: str, *, arch: str, input_filter: str, pretrained: str) -> tuple[torch.nn.Module, str]:
    """(train.init_from's weights as a `train.arch` detector, the file's SHA-256); optimizer and schedule start
    afresh (a fine-tune). Its input filter is the file's when it records one, else train.input_filter."""
    path = Path(init_from).expanduser()
    if not path.is_file():
        raise UserError(f"train.init_from {path} not found: give the path of a checkpoint (ours or a released one) "
                        "or set train.init_from: \"\" to start from train.pretrained")
    model, payload = load_detector(path, device=torch.device("cpu"), arch=arch, input_filter=input_filter)
    if model.arch != arch:
        raise UserError(f"train.init_from {path} is a {model.arch} detector (it records its arch) but train.arch is "
                        f"{arch}: set `-S train.arch={model.arch}` or pick a {arch} checkpoint")
    if model.input_filter_name != input_filter:
        log.info("train.init_from %s records input filter %s: using it, not train.input_filter %s", path,
                 model.input_filter_name, input_filter)
    if pretrained != "none":
        log.info("train.pretrained %s is ignored: the weights come from train.init_from", pretrained)
    digest = file_sha256(path)
    log.info("starting from %s (%s%s, sha256 %s…)", path, "released " if payload.get("released") else "",
             model.arch, digest[:12])
    return model, digest
