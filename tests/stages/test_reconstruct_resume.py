"""The reconstruct stage killed midway (a real subprocess) resumes, in either reconstruct.format, and torchrun
shards give the same bytes."""

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
    params["reconstruct"] = {**params["reconstruct"], "format": "match"}  # the fetched reals are JPEGs
    (folder / "params-match.yaml").write_text(yaml.safe_dump(params))
    for stage in ("fetch", "autoencoder"):
        subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=folder, check=True,
                       capture_output=True)
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stage_command(out: str, params: str = "params.yaml") -> list[str]:
    return [SCRIPT, "--params", params, "--out", out, "--rejects", f"{out}-rejects.csv", "--metrics", f"{out}.json",
            "--pairs", f"{out}-pairs.png"]


def reconstruct(workspace: Path, out: str, *launcher: str, params: str = "params.yaml") -> subprocess.CompletedProcess:
    command = [*(launcher or (sys.executable,)), *stage_command(out, params)]
    return subprocess.run(command, cwd=workspace, capture_output=True, text=True, env=ENV)


@pytest.mark.parametrize(("fake_format", "suffix"), [("png", ".png"), ("match", ".jpg")])
def test_killed_run_resumes_to_the_same_bytes(workspace, fake_format, suffix):
    params, reference_dir, killed_dir = "params.yaml", "data/reference", f"data/killed-{fake_format}"
    if fake_format == "match":
        params, reference_dir = "params-match.yaml", "data/reference-match"
    assert reconstruct(workspace, reference_dir, params=params).returncode == 0
    reference = digests(workspace / reference_dir)
    assert len(reference) == 220 and all(name.endswith(suffix) for name in reference)
    assert (workspace / f"{reference_dir}-pairs.png").read_bytes()[:4] == b"\x89PNG"
    process = subprocess.Popen([sys.executable, *stage_command(killed_dir, params)], cwd=workspace,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 120
    while len(list((workspace / killed_dir).rglob(f"*{suffix}"))) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    done = len(list((workspace / killed_dir).rglob(f"*{suffix}")))
    assert 40 <= done < 220, "killed too late to test resuming"
    assert not (workspace / f"{killed_dir}.json").exists()
    finished = reconstruct(workspace, killed_dir, params=params)
    assert finished.returncode == 0, finished.stderr
    assert "kept from an earlier run" in finished.stderr
    assert digests(workspace / killed_dir) == reference


def test_torchrun_with_two_ranks_gives_the_same_bytes(workspace):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if not (workspace / "data/reference").is_dir():
        assert reconstruct(workspace, "data/reference").returncode == 0
    result = reconstruct(workspace, "data/ranks", torchrun, "--standalone", "--nproc_per_node=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert digests(workspace / "data/ranks") == digests(workspace / "data/reference")
    assert '"resumed": 0' in (workspace / "data/info/ranks.json").read_text()  # the ranks did the work, not rank 0
