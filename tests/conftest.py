"""Shared fixtures. Tests never touch the network: the hub is offline and DVC sends no analytics."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))  # the checkout's library, even without `pip install -e .`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# Small enough to run every stage in seconds on 2 CPU cores, large enough that each split has both classes.
TINY_PARAMS = {
    "fetch": {"seed": 0, "sources": [{"kind": "samples", "crops_per_photo": 4, "min_side": 32, "max_side": 48,
                                      "val_groups": 2, "test_groups": 2, "jpeg_quality": 90}],
              "watch": "stages/fetch.py"},
    "autoencoder": {"kind": "random", "path": "", "seed": 0, "channels": [8, 8, 8, 8], "latent_channels": 4},
    "reconstruct": {"seed": 42, "sample": "sample", "batch_size": 4, "device": "cpu", "io_threads": 2},
    "manifest": {"verify_decode": True},
    "train": {"arch": "res18", "pretrained": "none", "seed": 17, "sync": True, "batch_size": 8, "data_cap": 0,
              "max_epochs": 2, "patience": 1, "workers": 0, "device": "cpu", "augment": {"crop_size": 32},
              "watch": "data/manifest"},  # dvc.yaml names every <section>.watch: the key must exist
    "stay_positive": {"seed": 14, "sync": True, "batch_size": 8, "data_cap": 0, "max_epochs": 2, "patience": 1,
                      "unfreeze_last_blocks": 0, "workers": 0, "device": "cpu"},
    "threshold": {"n_per_class": 5000, "seed": 0, "criterion": "bacc", "device": "cpu",
                  "scoring": {"protocol": "full", "batch_size": 8}, "watch": "data/manifest"},
    "evaluate": {"device": "cpu", "scoring": {"protocol": "full", "batch_size": 8},
                 "sweeps": {"test_set": "test", "jpeg": [50], "webp": [60], "resize": [0.5]}, "watch": "data/manifest"},
    "reference": {"scores": ["distance", "ratio"], "n_per_class": 5000, "seed": 0, "criterion": "bacc",
                  "device": "cpu", "watch": "data/manifest"},
    "report": {"title": "tiny"},
}


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def tiny_params(tmp_path: Path) -> Path:
    """A params.yaml with TINY_PARAMS in tmp_path."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    return path


@pytest.fixture
def http():
    """A real HTTP server on 127.0.0.1 (tests/http_server.py): put bytes in `.files`, faults in `.faults`."""
    from tests.http_server import Served, start_server

    served = Served()
    server = start_server(served)
    yield served
    server.shutdown()
    server.server_close()
