"""The reconstruct stage killed midway (a real subprocess) resumes, and torchrun shards give the same bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "stages" / "reconstruct.py")
# Same thread count in every run: CPU kernels split sums by thread, which can move a pixel by one level.
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Fetched reals (220 crops of 96-128 px) and the demo-sized random autoencoder."""
    folder = tmp_path_factory.mktemp("resume")
    params = {**TINY_PARAMS, "autoencoder": {"kind": "random", "seed": 0, "channels": [32, 32, 64, 64]}}
    params["fetch"] = {"seed": 0, "sources": [{**TINY_PARAMS["fetch"]["sources"][0], "crops_per_photo": 20,
                                               "min_side": 96, "max_side": 128}]}
    params["reconstruct"] = {**TINY_PARAMS["reconstruct"], "batch_size": 4, "io_threads": 1}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("fetch", "autoencoder"):
        subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=folder, check=True,
                       capture_output=True)
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def reconstruct(workspace: Path, out: str, *launcher: str) -> subprocess.CompletedProcess:
    command = [*(launcher or (sys.executable,)), SCRIPT, "--out", out, "--rejects", f"{out}-rejects.csv",
               "--metrics", f"{out}.json", "--pairs", f"{out}-pairs.png"]
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, env=ENV)


def test_killed_run_resumes_to_the_same_bytes(workspace):
    assert reconstruct(workspace, "data/reference").returncode == 0
    reference = digests(workspace / "data/reference")
    assert len(reference) == 220 and (workspace / "data/reference-pairs.png").read_bytes()[:4] == b"\x89PNG"
    command = [sys.executable, SCRIPT, "--out", "data/killed", "--rejects", "data/killed-rejects.csv",
               "--metrics", "data/killed.json", "--pairs", "data/killed-pairs.png"]
    process = subprocess.Popen(command, cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 120
    while len(list((workspace / "data/killed").rglob("*.png"))) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    done = len(list((workspace / "data/killed").rglob("*.png")))
    assert 40 <= done < 220, "killed too late to test resuming"
    assert not (workspace / "data/killed.json").exists()
    finished = reconstruct(workspace, "data/killed")
    assert finished.returncode == 0, finished.stderr
    assert "kept from an earlier run" in finished.stderr
    assert digests(workspace / "data/killed") == reference


def test_torchrun_with_two_ranks_gives_the_same_bytes(workspace):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if not (workspace / "data/reference").is_dir():
        assert reconstruct(workspace, "data/reference").returncode == 0
    result = reconstruct(workspace, "data/ranks", torchrun, "--standalone", "--nproc_per_node=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert digests(workspace / "data/ranks") == digests(workspace / "data/reference")
    assert '"resumed": 0' in (workspace / "data/info/ranks.json").read_text()  # the ranks did the work, not rank 0
