"""Latent-diffusion autoencoders: materialise one into a local folder, load it back, encode/decode."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
from safetensors.torch import load_file, save_file

from aligned_forensics.autoencoder.taesd import TinyAutoencoder, load_weight_pair
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import atomic_directory
from aligned_forensics.common.params import require

log = logging.getLogger(__name__)

INFO_FILE = "autoencoder.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
UNTRAINED_LABEL = "random-untrained (demo only)"
TINY_WEIGHTS = "taesd.safetensors"


@dataclass(frozen=True)
class AutoencoderConfig:
    """params.yaml `autoencoder`."""

    kind: Literal["random", "hub", "path", "taesd"]
    id: str = ""  # hub: e.g. CompVis/ldm-text2im-large-256
    subfolder: str = ""  # hub/path: e.g. vqvae or vae
    revision: str = "main"  # hub: a branch, tag or commit (pin a commit for exact reproducibility)
    path: str = ""  # path: a local diffusers folder (with config.json); taesd: folder or prefix of a weight pair
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    seed: int = 0  # random: weight initialisation
    channels: tuple[int, ...] = (32, 32, 64, 64)  # random: block widths; 4 blocks = downsampling factor 8
    latent_channels: int = 4  # random

    def __post_init__(self) -> None:
        require(self.kind != "hub" or bool(self.id), "autoencoder.id", "a Hugging Face id when kind is hub", self.id)
        require(self.kind not in ("path", "taesd") or bool(self.path), "autoencoder.path",
                f"a folder when kind is {self.kind}", self.path)
        require(len(self.channels) >= 1 and all(c > 0 and c % 8 == 0 for c in self.channels),
                "autoencoder.channels", "a non-empty list of multiples of 8", self.channels)
        require(self.latent_channels >= 1, "autoencoder.latent_channels", "an integer >= 1", self.latent_channels)


def build_random_autoencoder(*, seed: int, channels: tuple[int, ...], latent_channels: int) -> torch.nn.Module:
    """A seeded, untrained diffusers AutoencoderKL (KL-f8 layout when `channels` has 4 blocks)."""
    torch.manual_seed(seed)  # diffusers initialises weights from the global generator
    return diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        mid_block_add_attention=False,
    )


def materialise_autoencoder(config: AutoencoderConfig, out_dir: Path) -> dict[str, Any]:
    """Write the configured autoencoder as a diffusers folder (safetensors) plus autoencoder.json."""
    if config.kind == "random":
        model = build_random_autoencoder(seed=config.seed, channels=config.channels,
                                         latent_channels=config.latent_channels)
        if config.dtype != "float32":
            model = model.to(DTYPES[config.dtype])
        info = {"label": UNTRAINED_LABEL, "trained": False, "revision": None}
    elif config.kind == "hub":
        model, revision = _from_hub(config)
        info = {"label": f"{config.id}/{config.subfolder}".rstrip("/"), "trained": True, "revision": revision}
    elif config.kind == "taesd":
        model = load_weight_pair(Path(config.path)).to(DTYPES[config.dtype])
        info = {"label": str(config.path), "trained": True, "revision": None,
                "latent_channels": model.latent_channels, "branch": model.branch}
    else:
        model = _from_folder(Path(config.path) / config.subfolder, dtype=DTYPES[config.dtype])
        info = {"label": str(Path(config.path) / config.subfolder), "trained": True, "revision": None}
    info |= {"class": type(model).__name__, "config": asdict(config),
             "parameters": sum(p.numel() for p in model.parameters())}
    with atomic_directory(out_dir) as staging:
        if isinstance(model, TinyAutoencoder):
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, staging / TINY_WEIGHTS)
        else:
            model.save_pretrained(staging, safe_serialization=True)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def load_autoencoder(folder: Path, *, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a folder written by materialise_autoencoder, in eval mode on `device`."""
    info_path = Path(folder) / INFO_FILE
    if not info_path.is_file():
        raise UserError(f"{info_path} not found: run `dvc repro autoencoder` first")
    info = json.loads(info_path.read_text())
    dtype = DTYPES[info["config"]["dtype"]]
    if info["class"] == TinyAutoencoder.__name__:
        model = TinyAutoencoder(info["latent_channels"], branch=info["branch"])
        model.load_state_dict(load_file(Path(folder) / TINY_WEIGHTS), strict=True)
        model = model.to(dtype)
    else:
        model = _from_folder(Path(folder), dtype=dtype)
    return model.to(device).eval(), info


def _autoencoder_class(config_path: Path) -> type:
    name = json.loads(config_path.read_text()).get("_class_name", "")
    return _diffusers_class(name, where=f"{config_path}: '_class_name'")


def _diffusers_class(name: str, *, where: str) -> type:
    cls = getattr(diffusers, name, None)
    if cls is None or not (name.startswith("Autoencoder") or name in ("AsymmetricAutoencoderKL", "VQModel")):
        raise UserError(f"{where} is {name!r}, not a diffusers autoencoder class")
    return cls


def _from_folder(folder: Path, *, dtype: torch.dtype) -> torch.nn.Module:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UserError(f"{folder} is not a diffusers autoencoder folder (no config.json); set autoencoder.path "
                        "to a folder written by `save_pretrained`, or autoencoder.subfolder to e.g. 'vae'")
    return _autoencoder_class(config_path).from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=False)


def _from_hub(config: AutoencoderConfig) -> tuple[torch.nn.Module, str]:
    from huggingface_hub import hf_hub_download

    subfolder = config.subfolder or None
    try:
        config_file = hf_hub_download(config.id, "config.json", subfolder=subfolder, revision=config.revision)
        cls = _autoencoder_class(Path(config_file))
        model = cls.from_pretrained(config.id, subfolder=subfolder, revision=config.revision,
                                    torch_dtype=DTYPES[config.dtype], low_cpu_mem_usage=False)
    except UserError:
        raise
    except Exception as error:  # hub errors vary by version and cause (offline, gated, typo)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        raise UserError(
            f"could not load autoencoder '{config.id}' (subfolder '{config.subfolder}', revision "
            f"'{config.revision}'){' with HF_HUB_OFFLINE=1' if offline else ''}: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}. On a machine with internet run "
            f"`hf download {config.id}` (and accept its licence if gated), or copy a diffusers "
            "folder here and set autoencoder.kind=path and autoencoder.path; the offline demo uses "
            "autoencoder.kind=random"
        ) from None
    match = re.search(r"snapshots/([0-9a-f]{40})/", config_file)
    return model, match.group(1) if match else config.revision


def describe_autoencoder(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds `model`'s layers without its files (a detector that embeds it records this); JSON types only."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if isinstance(model, TinyAutoencoder):
        return {"class": TinyAutoencoder.__name__, "latent_channels": model.latent_channels, "branch": model.branch,
                "dtype": dtype}
    config = {key: value for key, value in model.config.items() if not key.startswith("_")}  # no local paths
    return {"class": type(model).__name__, "config": json.loads(json.dumps(config)), "dtype": dtype}


def autoencoder_skeleton(description: dict[str, Any]) -> torch.nn.Module:
    """The layers `describe_autoencoder` recorded, with untrained weights (a state dict fills them), in eval mode."""
    if description["class"] == TinyAutoencoder.__name__:
        model = TinyAutoencoder(description["latent_channels"], branch=description["branch"])
    else:
        cls = _diffusers_class(description["class"], where="the autoencoder class a detector records")
        model = cls.from_config(description["config"])
    return model.to(DTYPES[description["dtype"]]).eval()

