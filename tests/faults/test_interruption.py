"""`kill -9` in the middle of fetch, reconstruct and train under the real `dvc repro`: the rerun equals an
uninterrupted run, byte for byte, and leaves no temp file behind.

One fresh project runs `dvc repro train` without interruption (the reference). A second fresh project runs the
same command three times, each killed at a seeded-random point: during fetch (the stage's python process),
during reconstruct (the stage's python process) and during train (dvc's whole process group, as a crash or a
closed terminal does). A fourth `dvc repro train` finishes it. AF_FAULT_SEED picks other kill points.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import TINY_PARAMS
from tests.projects import ENV as PROJECT_ENV
from tests.projects import make_project
from tests.projects import run as run_in_project

SEED = int(os.environ.get("AF_FAULT_SEED", "8"))

# 660 reals: enough that fetch and reconstruct write for a few tenths of a second (time to kill them midway);
# training sees 16 pairs per epoch, so four validations take seconds.
PARAMS = copy.deepcopy(TINY_PARAMS)
PARAMS["fetch"]["sources"][0]["crops_per_photo"] = 60
PARAMS["train"].update({"data_cap": 16, "max_epochs": 3, "patience": 2})
# One thread everywhere: CPU kernels split sums by thread count, which can move a pixel or a weight's last bit.
ENV = PROJECT_ENV | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Outputs compared between the two projects (metrics with timings are compared without them).
DATA = ("data/real", "data/fetch", "data/autoencoder", "data/fake", "data/reconstruct", "data/manifest", "data/model",
        "metrics/fetch.json", "metrics/manifest.json", "metrics/reconstruct/pairs.png", "metrics/train",
        "metrics/train.json", "metrics/reconstruct.json", "metrics/info/fetch.json", "metrics/info/manifest.json")
TIMINGS = {"metrics/train/metrics.json": ("train_seconds",), "metrics/info/train.json": ("train_seconds",),
           "metrics/info/reconstruct.json": ("seconds", "images_per_second", "reconstructed_now", "resumed")}
TEMP_PATTERNS = ("*.partial", "*.tmp", ".*.tmp-*", "*.partial/*")  # io.py's PARTIAL_SUFFIX, and other writers'


def run(args: list[str], cwd: Path, *, check: bool = True):
    return run_in_project(args, cwd, env=ENV, check=check, timeout=600)


def digests(project: Path) -> dict[str, str]:
    """sha256 of every compared file, metrics JSON without its timings."""
    found = {}
    for name in (*DATA, *TIMINGS):
        top = project / name
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file():
                relative = path.relative_to(project).as_posix()
                data = path.read_bytes()
                if relative in TIMINGS:
                    values = json.loads(data)
                    data = json.dumps({k: v for k, v in values.items() if k not in TIMINGS[relative]}).encode()
                found[relative] = hashlib.sha256(data).hexdigest()
    return found


def temp_files(project: Path) -> list[str]:
    return sorted({p.relative_to(project).as_posix() for pattern in TEMP_PATTERNS
                   for top in ("data", "metrics") for p in (project / top).rglob(pattern)})


def locked_stages(project: Path) -> dict:
    lock = project / "dvc.lock"
    return yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}


def stage_process(dvc: subprocess.Popen, script: str) -> psutil.Process | None:
    """The python process dvc started for `script` (dvc runs the cmd through a shell)."""
    try:
        children = psutil.Process(dvc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if script in " ".join(child.cmdline()) and "python" in child.name():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for(condition: Callable[[], bool], dvc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert dvc.poll() is None, f"dvc exited ({dvc.returncode}) before {what} (AF_FAULT_SEED={SEED})"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.003)


def files_in(folder: Path, suffix: str) -> int:
    """Files in the split folders (scandir: cheap enough to poll every few milliseconds)."""
    return sum(entry.name.endswith(suffix) for split in ("train", "val", "test") if (folder / split).is_dir()
               for entry in os.scandir(folder / split))


def tsv_rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def interrupted_repro(project: Path, stage: str, ready: Callable[[], bool], *, whole_group: bool) -> str:
    """Start `dvc repro train`, wait until `stage` has produced output (`ready`), SIGKILL it; return dvc's log."""
    log = project / f"killed-{stage}.log"
    with open(log, "w") as handle:
        dvc = subprocess.Popen(["dvc", "repro", "train"], cwd=project, env=ENV, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own process group, so killpg reaches only it
        try:
            script = f"stages/{stage}.py"
            wait_for(lambda: stage_process(dvc, script) is not None, dvc, f"{stage} to start")
            victim = stage_process(dvc, script)
            wait_for(ready, dvc, f"{stage} to produce output")
            if whole_group:
                os.killpg(dvc.pid, signal.SIGKILL)
            else:
                victim.kill()
            dvc.wait(timeout=120)
        finally:
            if dvc.poll() is None:
                os.killpg(dvc.pid, signal.SIGKILL)
                dvc.wait()
    text = log.read_text()
    assert dvc.returncode != 0, f"dvc repro finished before {stage} was killed:\n{text[-2000:]}"
    assert f"Running stage '{stage}'" in text, text[-2000:]
    return text


def assert_changed_not_cached(project: Path, stage: str, locked_before: dict) -> None:
    """After a kill, DVC reports `stage` as changed, and dvc.lock holds nothing from the killed run."""
    status = json.loads(run(["dvc", "status", "--json", stage], project).stdout or "{}")
    assert stage in status, f"dvc status calls the killed stage '{stage}' up to date: {status}"
    assert locked_stages(project).get(stage) == locked_before.get(stage), f"dvc.lock recorded the killed {stage}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, str]:
    project = make_project(tmp_path_factory.mktemp("uninterrupted"), PARAMS)
    run(["dvc", "repro", "train"], project)
    assert not temp_files(project)
    return digests(project)


@pytest.mark.slow
def test_killed_fetch_reconstruct_and_train_rerun_to_the_uninterrupted_result(reference, tmp_path):
    draw = random.Random(SEED)
    project = make_project(tmp_path, PARAMS)
    fetched, faked = 660, 660

    # 1. fetch, killed after a random number of its images are in the staging folder (data/real.partial)
    at = draw.randint(10, fetched // 3)
    interrupted_repro(project, "fetch", lambda: files_in(project / "data/real.partial", ".jpg") >= at,
                      whole_group=False)
    assert not (project / "data/real").exists(), "a killed fetch left a data/real that looks finished"
    assert_changed_not_cached(project, "fetch", {})

    # 2. reconstruct, killed after a random number of fakes; a kill inside a write leaves <name>.png.partial
    at = draw.randint(10, faked // 2)
    interrupted_repro(project, "reconstruct", lambda: files_in(project / "data/fake", ".png") >= at,
                      whole_group=False)
    assert "fetch" in locked_stages(project), "the rerun of the killed fetch was not recorded"
    done = sorted((project / "data/fake/train").glob("*.png"))
    assert done, "no fake was written before the kill"
    (done[0].with_name(done[0].name + ".partial")).write_bytes(done[0].read_bytes()[:100])
    assert_changed_not_cached(project, "reconstruct", locked_stages(project))

    # 3. train, dvc's whole process group killed after a random epoch was logged, then a random pause
    locked = locked_stages(project)
    epoch, pause = draw.randint(0, 2), draw.uniform(0.0, 0.5)
    curve = project / "metrics/train/plots/metrics/val_bacc.tsv"
    ready_at: list[float] = []

    def trained_enough() -> bool:
        if not ready_at and tsv_rows(curve) >= epoch + 1:
            ready_at.append(time.monotonic())
        return bool(ready_at) and time.monotonic() - ready_at[0] >= pause

    interrupted_repro(project, "train", trained_enough, whole_group=True)
    model = project / "data/model"
    resumable = (model / "last.pt").is_file()
    if resumable:  # as a kill inside a checkpoint write leaves it
        (model / "best.pt.partial").write_bytes((model / "last.pt").read_bytes()[:4096])
    assert_changed_not_cached(project, "train", locked)

    # 4. the rerun finishes: nothing done twice that was finished, everything equal to the uninterrupted run
    rerun = run(["dvc", "repro", "train"], project)
    log = rerun.stdout + rerun.stderr
    assert "Running stage 'fetch'" not in log and "Running stage 'reconstruct'" not in log, log[-3000:]
    assert ("resuming after epoch" in log) == resumable, log[-3000:]
    assert temp_files(project) == [], "temp files left after the rerun"
    assert json.loads(run(["dvc", "status", "--json", "--with-deps", "train"], project).stdout or "{}") == {}
    got = digests(project)
    differ = sorted(name for name in reference.keys() | got.keys() if reference.get(name) != got.get(name))
    assert not differ, f"{len(differ)} file(s) differ from the uninterrupted run (AF_FAULT_SEED={SEED}): {differ[:20]}"

    # 5. a temp file from a kill inside a checkpoint write, in a finished model folder (nothing left to write)
    (model / "best.pt.partial").write_bytes((model / "best.pt").read_bytes()[:4096])
    assert "train" in json.loads(run(["dvc", "status", "--json", "train"], project).stdout or "{}")
    rerun = run(["dvc", "repro", "train"], project)
    assert "Running stage 'train'" in rerun.stdout, rerun.stdout[-3000:]
    assert temp_files(project) == [] and digests(project) == reference


def test_a_checkpoint_saved_after_a_resume_has_the_bytes_of_an_uninterrupted_one(tmp_path):
    """Pickle refers back to a string by object identity: history rows read from last.pt and rows made from
    code literals must still give the same bytes (else DVC sees a resumed data/model as a different one)."""
    import torch

    from aligned_forensics.detector.checkpoints import read_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 1)
    model.arch = "linear"
    config = {"augment": {"crop_size": 8}}

    def row(epoch: int) -> dict:
        return {"epoch": epoch, "train_loss": 0.5, "lr": 1e-4, "val_bacc": 0.75}

    def save(path: Path, history: list) -> None:
        save_checkpoint(path, model, config=config, epoch=len(history) - 1, metrics=row(0),
                        training_state={"history": history, "best": row(0), "finished": False})

    save(tmp_path / "first.pt", [row(0)])
    resumed = read_checkpoint(tmp_path / "first.pt")["training_state"]["history"]
    save(tmp_path / "resumed.pt", [*resumed, row(1)])
    save(tmp_path / "whole.pt", [row(0), row(1)])
    assert (tmp_path / "resumed.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()
