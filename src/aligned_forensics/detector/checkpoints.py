"""Detector checkpoints that carry their architecture and preprocessing, loaded safely (weights_only).

Also loads every form the authors' loader accepts: a dict holding the weights under `model` (their training
checkpoints: {'model', 'optimizer', 'total_steps'}), `state_dict` or `net`, or a bare state dict; keys may be
prefixed `module.` and the head is `fc`. Such files record no architecture (`res50nodown` unless told) and get
the original's preprocessing: ImageNet normalisation, a 96-pixel training crop, no input filter.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch

from aligned_forensics.autoencoder.autoencoder import autoencoder_skeleton
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import atomic_write_bytes
from aligned_forensics.detector.models import AnyDetector, create_detector
from aligned_forensics.detector.preprocessing import IMAGENET_MEAN, IMAGENET_STD

FORMAT = "aligned-forensics-detector/1"
DEFAULT_ARCH = "res50nodown"  # the paper's detector: what a file that records no architecture is
RELEASED_FORMS = ("model", "state_dict", "net")  # the keys the original loader looks under, in its order
RELEASED_TRAIN_CROP = 96  # the original's --cropSize; its tests score the whole image
log = logging.getLogger(__name__)


def save_checkpoint(path: Path, model: torch.nn.Module, *, config: dict[str, Any], epoch: int,
                    metrics: dict[str, float], training_state: dict[str, Any] | None = None) -> None:
    """Write {format, arch, state_dict, preprocessing, config, epoch, metrics[, training_state]} atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "arch": model.arch, "input_filter": getattr(model, "input_filter_name", "none"),
               "state_dict": state, "config": config, "epoch": epoch,
               "metrics": metrics, "preprocessing": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                                                     "train_crop": config["augment"]["crop_size"]}}
    embedded = getattr(getattr(model, "input_filter", None), "description", None)
    if embedded is not None:  # an embedded autoencoder: its layers, rebuilt at load time
        payload["autoencoder"] = embedded
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


def released_preprocessing() -> dict[str, Any]:
    """The original code's preprocessing: ImageNet mean/std, trained on 96-pixel crops."""
    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "train_crop": RELEASED_TRAIN_CROP}


def _released_state(path: Path, payload: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict without `module.` prefixes, fc reshaped to a Linear's; the form it was found in)."""
    form = next((key for key in RELEASED_FORMS if isinstance(payload.get(key), dict)), None)
    state = payload[form] if form else payload
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        found = ", ".join(f"{key!r}: {type(value).__name__}" for key, value in list(payload.items())[:12])
        raise UserError(f"{path} is neither an aligned-forensics checkpoint (format {FORMAT!r}) nor a released one "
                        f"(a dict with a state dict under {', '.join(map(repr, RELEASED_FORMS))}, or a bare state "
                        f"dict of tensors); found {{{found}}}. Save the model as torch.save(model.state_dict(), ...)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    # a ChannelLinear(2048 -> 1) has the weights of a Linear with these shapes
    state = {key: value.reshape(1, -1) if key == "fc.weight" else value.reshape(1) if key == "fc.bias" else value
             for key, value in state.items()}
    return state, form or "bare state dict"


def resolve_checkpoint(
    path: Path, *, arch: str | None = None, input_filter: str | None = None
) -> tuple[str, str, dict[str, torch.Tensor], dict[str, Any]]:
    """(arch, input filter, state dict, payload in our format but without its state) of any supported file.

    `arch` / `input_filter` apply to files that record none (default res50nodown / none); a file that records
    an architecture other than the one asked is loaded as what it records, and says so."""
    payload = read_checkpoint(path)
    if payload.get("format") == FORMAT:
        if arch and arch != payload["arch"]:
            log.info("%s records arch %s: loading it as %s, not %s", path, payload["arch"], payload["arch"], arch)
        state = payload["state_dict"]
        info = {key: value for key, value in payload.items() if key != "state_dict"}
        info.setdefault("preprocessing", released_preprocessing())
        return payload["arch"], payload.get("input_filter", "none"), state, info
    state, form = _released_state(path, payload)
    arch, input_filter = arch or DEFAULT_ARCH, input_filter or "none"
    info = {"format": FORMAT, "arch": arch, "input_filter": input_filter, "config": {}, "metrics": {},
            "preprocessing": released_preprocessing(), "released": True, "released_form": form}
    if isinstance(payload.get("total_steps"), int):  # the original counts optimiser steps, not epochs
        info["total_steps"] = payload["total_steps"]
    return arch, input_filter, state, info


def load_detector(
    path: Path, *, device: torch.device, arch: str | None = None, input_filter: str | None = None
) -> tuple[AnyDetector, dict[str, Any]]:
    """Load our checkpoint or an authors' release (see resolve_checkpoint), in eval mode on `device`."""
    arch, input_filter, state, payload = resolve_checkpoint(path, arch=arch, input_filter=input_filter)
    autoencoder = autoencoder_skeleton(payload["autoencoder"]) if "autoencoder" in payload else None
    model = create_detector(arch, pretrained="none", seed=0, input_filter=input_filter, autoencoder=autoencoder)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{path} does not fit a {arch} detector: {str(error).splitlines()[0]}; a released "
                        "checkpoint of another architecture needs its arch (--arch, or train.arch for "
                        "train.init_from)") from None
    return model.to(device).eval(), payload


def write_bundle(model_path: Path, threshold: dict[str, Any], out: Path, *, arch: str | None = None) -> None:
    """The model and its calibrated threshold in one file of our format (what `predict` and users ship)."""
    raw = read_checkpoint(model_path)
    if raw.get("format") == FORMAT:
        payload = raw | {"threshold": threshold}
    else:  # a released file: our format, so the bundle records the arch it was calibrated as
        arch, input_filter, state, info = resolve_checkpoint(model_path, arch=arch)
        payload = info | {"state_dict": state, "threshold": threshold}
    buffer = io.BytesIO()
    torch.save(_canonical(payload), buffer)
    atomic_write_bytes(out, buffer.getvalue())
