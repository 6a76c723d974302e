"""DDP: `torchrun` with 2 CPU processes (gloo) trains the same steps as one process and ends in one model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from aligned_forensics.detector.checkpoints import read_checkpoint
from tests.conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[2]
ENV = os.environ | {"OMP_NUM_THREADS": "1"}  # torchrun's default per process; the same for both runs


def test_two_gloo_processes_match_one(tmp_path):
    params = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "max_epochs": 2, "patience": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("fetch", "autoencoder", "reconstruct", "manifest"):
        subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path, check=True,
                       capture_output=True, env=ENV)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    runs = {"one": [sys.executable], "two": [torchrun, "--standalone", "--nproc_per_node=2"]}
    for name, launcher in runs.items():
        result = subprocess.run([*launcher, str(ROOT / "stages/train.py"), "--out", f"model-{name}", "--live",
                                 f"live-{name}"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (read_checkpoint(tmp_path / f"model-{name}" / "last.pt") for name in runs)
    assert one["epoch"] == two["epoch"] == 2
    history = {name: read_checkpoint(tmp_path / f"model-{name}" / "last.pt")["training_state"]["history"]
               for name in runs}
    # the same global batches and averaged gradients; batch-norm statistics are per process on CPU (gloo has
    # no SyncBatchNorm), so the losses agree closely rather than bit for bit
    for row_one, row_two in zip(history["one"][1:], history["two"][1:], strict=True):
        assert abs(row_one["train_loss"] - row_two["train_loss"]) < 0.05
    assert json.loads((tmp_path / "live-two" / "metrics.json").read_text())["step"] == 2
