"""Detector checkpoints that carry their architecture and preprocessing, loaded safely (weights_only).

Also loads the authors' released checkpoints ({'model': state_dict}, keys possibly prefixed `module.`,
the head called `fc`) for evaluation: their architecture is `res50nodown` unless told otherwise.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import atomic_write_bytes
from aligned_forensics.detector.models import AnyDetector, create_detector
from aligned_forensics.detector.preprocessing import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "aligned-forensics-detector/1"


def save_checkpoint(path: Path, model: torch.nn.Module, *, config: dict[str, Any], epoch: int,
                    metrics: dict[str, float], training_state: dict[str, Any] | None = None) -> None:
    """Write {format, arch, state_dict, preprocessing, config, epoch, metrics[, training_state]} atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "arch": model.arch, "input_filter": getattr(model, "input_filter_name", "none"),
               "state_dict": state, "config": config, "epoch": epoch,
               "metrics": metrics, "preprocessing": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                                     "train_crop": config["augment"]["crop_size"]}}
    if training_state is not None:
        payload["training_state"] = training_state
    buffer = io.BytesIO()
    torch.save(_canonical(payload), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _canonical(value: Any) -> Any:
    """A copy whose pickle bytes depend on the content alone: equal strings become one object, no container
    is shared. Pickle writes a string again or refers back to it by object identity, so a resumed run's
    last.pt (history read from the old file, new rows from code literals) differed in bytes, and so in its
    DVC hash, from an uninterrupted run's, with every value equal."""
    if type(value) is str:
        return sys.intern(value)
    if type(value) is dict:
        return {_canonical(key): _canonical(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_canonical(item) for item in value)
    return value


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of any checkpoint file (no pickle code execution), with a clear error when unreadable."""
    if not Path(path).is_file():
        raise UserError(f"{path} not found: run `dvc repro train` first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or a pickle naming code
        text = str(error)
        unsupported = re.search(r"Unsupported global: GLOBAL [\w.]+", text)
        if isinstance(error, pickle.UnpicklingError) and unsupported:  # torch's own text advises weights_only=False
            raise UserError(f"refused to load {path}: it holds pickled Python objects other than tensors and "
                            f"plain containers ({unsupported.group(0)}), which could run code; nothing in it "
                            "was run. Re-save it as a plain state dict (torch.save(model.state_dict(), ...)) "
                            "where its origin is trusted") from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        raise UserError(f"{path} is not a loadable checkpoint ({type(error).__name__}: "
                        f"{detail.group(1) if detail else text.split('. ')[0]}); it may be truncated or not a "
                        "torch file: rerun the stage that writes it") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path} holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def load_detector(
    path: Path, *, device: torch.device, arch: str = "res50nodown"
) -> tuple[AnyDetector, dict[str, Any]]:
    """Load our checkpoint or an authors' release (`arch` names its architecture), in eval mode on `device`."""
    payload = read_checkpoint(path)
    if payload.get("format") == FORMAT:
        arch, state = payload["arch"], payload["state_dict"]
    elif isinstance(payload.get("model"), dict):  # the original code's {'model', 'optimizer', 'total_steps'}
        state = {key.removeprefix("module."): value for key, value in payload["model"].items()}
        state = {key: value.reshape(1, -1) if key == "fc.weight" else value.reshape(1) if key == "fc.bias" else value
                 for key, value in state.items()}  # a ChannelLinear(2048 -> 1) is a Linear with these shapes
        payload = {"arch": arch, "config": {}, "epoch": payload.get("total_steps"), "metrics": {}, "released": True}
    else:
        raise UserError(f"{path} is neither an aligned-forensics checkpoint (format {FORMAT!r}) nor a released "
                        "one (a dict with a 'model' state dict)")
    model = create_detector(arch, pretrained="none", seed=0, input_filter=payload.get("input_filter", "none"))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{path} does not fit a {arch} detector: {str(error).splitlines()[0]}; for a released "
                        "checkpoint of another architecture pass its arch") from None
    return model.to(device).eval(), payload


def write_bundle(model_path: Path, threshold: dict[str, Any], out: Path) -> None:
    """The model and its calibrated threshold in one file (what `predict` and users ship)."""
    payload = read_checkpoint(model_path) | {"threshold": threshold}
    buffer = io.BytesIO()
    torch.save(_canonical(payload), buffer)
    atomic_write_bytes(out, buffer.getvalue())
