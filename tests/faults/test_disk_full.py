"""A full disk (ENOSPC) in fetch, reconstruct, train and evaluate: exit code 2, one message that names the file
and what to free, no temp file left, earlier complete files untouched, and a rerun with space finishes the work.

The disk is simulated at the write layer (io.py's `open`, which every output, PNG and checkpoint goes through)
with a byte budget shared by all writes; a last test mounts a real tiny tmpfs when the machine allows it.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

import aligned_forensics.common.io as io_module
from aligned_forensics.common.cli import run_stage, stage_parser
from aligned_forensics.common.io import atomic_write_bytes, read_csv
from tests.conftest import TINY_PARAMS
from tests.stages.conftest import stage_main

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ("fetch", "autoencoder", "reconstruct", "manifest", "train", "threshold", "evaluate")


class FullDisk:
    """`free` bytes shared by every file io.py opens for writing; the write that does not fit writes what
    fits and raises ENOSPC, as a real disk does (the error carries no file name)."""

    def __init__(self, free: int) -> None:
        self.free, self.full_at, self.lock = free, [], threading.Lock()

    def open(self, file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (closed by the caller's `with`)
        return handle if not set(mode) & set("wax+") else _Budgeted(handle, self, str(file))


class _Budgeted:
    def __init__(self, handle, disk: FullDisk, name: str) -> None:
        self.handle, self.disk, self.name = handle, disk, name

    def write(self, data: bytes) -> int:
        with self.disk.lock:
            fits = min(len(data), self.disk.free)
            self.disk.free -= fits
        self.handle.write(data[:fits])
        if fits < len(data):
            self.disk.full_at.append(self.name)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fits

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if ".partial" in p.name)


def assert_disk_full_message(caplog, stage: str, where: str) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[-1].startswith(f"{stage} failed: disk full: could not write {where}"), errors
    assert "MiB left on the disk" in errors[-1] and "Free space there" in errors[-1] and "rerun" in errors[-1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Every stage up to evaluate run once on the tiny params (no fault): the reference outputs."""
    folder = tmp_path_factory.mktemp("disk")
    (folder / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    previous = os.getcwd()
    os.chdir(folder)
    try:
        for name in UPSTREAM:
            assert stage_main(name)([]) == 0, name
    finally:
        os.chdir(previous)
    return folder


@pytest.fixture
def full_disk(monkeypatch):
    """Install a FullDisk with `free` bytes: full_disk(free); uninstall with full_disk(None)."""
    def install(free: int | None) -> FullDisk | None:
        if free is None:
            monkeypatch.setattr(io_module, "open", builtins.open, raising=False)
            return None
        disk = FullDisk(free)
        monkeypatch.setattr(io_module, "open", disk.open, raising=False)
        return disk
    return install


def test_fetch_keeps_the_old_folder_and_writes_no_index(workspace, full_disk, monkeypatch, caplog):
    monkeypatch.chdir(workspace)
    shutil.copytree("data/real", "data/real2", dirs_exist_ok=True)  # an earlier complete fetch
    before = digests(workspace / "data/real2")
    arguments = ["--out", "data/real2", "--index", "data/fetch2/index.csv", "--rejects", "data/fetch2/rejects.csv",
                 "--metrics", "metrics/fetch2.json"]
    half = sum(p.stat().st_size for p in Path("data/real").rglob("*.jpg")) // 2
    disk = full_disk(half)
    assert stage_main("fetch")(arguments) == 2
    assert disk.full_at and disk.full_at[0].startswith("data/real2.partial/")
    assert_disk_full_message(caplog, "fetch", "data/real2.partial/")
    assert digests(workspace / "data/real2") == before, "the earlier complete data/real2 was changed"
    assert not Path("data/real2.partial").exists() and not Path("data/fetch2/index.csv").exists()
    assert temp_files(workspace) == []

    full_disk(None)
    assert stage_main("fetch")(arguments) == 0
    assert digests(workspace / "data/real2") == digests(workspace / "data/real")
    assert len(read_csv(workspace / "data/fetch2/index.csv")) == len(read_csv(workspace / "data/fetch/index.csv"))


def test_reconstruct_keeps_finished_fakes_and_resumes(workspace, full_disk, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(workspace)
    reference = digests(workspace / "data/fake")
    for name in sorted(reference)[::2]:  # half the fakes from an earlier, complete run
        (workspace / "data/fake2" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workspace / "data/fake" / name, workspace / "data/fake2" / name)
    arguments = ["--out", "data/fake2", "--rejects", "data/reconstruct2/rejects.csv", "--metrics",
                 "metrics/reconstruct2.json", "--pairs", "metrics/reconstruct2/pairs.png"]
    one_fake = max(p.stat().st_size for p in (workspace / "data/fake").rglob("*.png"))
    full_disk(5 * one_fake)
    assert stage_main("reconstruct")(arguments) == 2
    assert_disk_full_message(caplog, "reconstruct", "data/fake2/")
    got = digests(workspace / "data/fake2")
    assert len(reference) // 2 <= len(got) < len(reference)
    assert all(reference[name] == digest for name, digest in got.items()), "a fake is truncated or changed"
    assert temp_files(workspace) == [] and not Path("metrics/reconstruct2.json").exists()

    full_disk(None)
    caplog.clear()
    assert stage_main("reconstruct")(arguments) == 0
    assert digests(workspace / "data/fake2") == reference
    assert f"{len(got):,} kept from an earlier run" in caplog.text


def test_train_keeps_a_loadable_checkpoint_and_resumes_to_the_same_model(workspace, full_disk, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(workspace)
    arguments = ["--out", "data/model2", "--live", "metrics/train2"]
    best, last = (os.path.getsize(workspace / "data/model" / name) for name in ("best.pt", "last.pt"))
    # epoch 0's last.pt (weights, no optimizer state yet; epoch 0 is never best) and epoch 1's best.pt fit, its
    # last.pt (with Adam's moments, about 3x the weights) does not
    full_disk(2 * best + last // 2)
    assert stage_main("train")(arguments) == 2
    assert_disk_full_message(caplog, "train", "data/model2/")
    assert sorted(p.name for p in (workspace / "data/model2").iterdir()) == ["best.pt", "last.pt"]
    assert torch.load(workspace / "data/model2/last.pt", weights_only=True)["epoch"] == 0

    full_disk(None)
    caplog.clear()
    assert stage_main("train")(arguments) == 0
    assert "resuming after epoch 0" in caplog.text
    assert digests(workspace / "data/model2") == digests(workspace / "data/model"), "resumed model differs"


def test_evaluate_leaves_every_earlier_output_whole(workspace, full_disk, monkeypatch, caplog):
    monkeypatch.chdir(workspace)
    outputs = ("data/evaluate", "metrics/eval")
    before = {name: digests(workspace / name) for name in outputs}
    before_metrics = Path("metrics/eval.json").read_bytes()
    total = sum(p.stat().st_size for name in outputs for p in (workspace / name).rglob("*") if p.is_file())
    full_disk(total // 3)
    assert stage_main("evaluate")([]) == 2
    assert_disk_full_message(caplog, "evaluate", "")
    assert {name: digests(workspace / name) for name in outputs} == before
    assert Path("metrics/eval.json").read_bytes() == before_metrics
    assert temp_files(workspace) == []


def test_a_full_disk_outside_io_is_exit_2_with_the_same_message(tmp_path, caplog):
    """dvclive and libraries write their own files: run_stage maps their ENOSPC too, and nothing else."""
    def body(args) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "metrics/train/plots/lr.tsv"))

    assert run_stage("train", stage_parser("t"), body, []) == 2
    assert f"train failed: disk full: could not write {tmp_path}/metrics/train/plots/lr.tsv" in caplog.text

    def other(args) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", "x")

    with pytest.raises(PermissionError):
        run_stage("train", stage_parser("t"), other, [])


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def _namespace_prefix() -> list[str] | None:
    """A command prefix that runs its command in a private mount namespace where it may mount a tmpfs."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for prefix in ([unshare, "-rm"], [unshare, "-m"]):
        probe = subprocess.run([*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


CHECK = """
import hashlib, json, pathlib, subprocess, sys
out = pathlib.Path(sys.argv[1])
done = subprocess.run(sys.argv[2:], capture_output=True, text=True)
files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
         for p in out.rglob('*') if p.is_file()}
print(json.dumps({"rc": done.returncode, "stderr": done.stderr[-4000:], "files": files}))
"""


def test_reconstruct_on_a_real_full_tmpfs(workspace, tmp_path):
    """The same promise on a real 64 KiB tmpfs holding data/fake (needs a private mount namespace)."""
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs here (no unshare, no user namespaces, not root)")
    shutil.copytree(workspace, tmp_path / "w", ignore=shutil.ignore_patterns("fake*", "model*", "evaluate"))
    out = tmp_path / "w" / "data" / "fake3"
    out.mkdir()
    stage = [sys.executable, str(ROOT / "stages/reconstruct.py"), "--out", "data/fake3", "--rejects", "r.csv",
             "--metrics", "m.json", "--pairs", "p.png"]
    script = f'mount -t tmpfs -o size=64k tmpfs {out} && exec "$0" "$@"'
    result = subprocess.run([*prefix, "sh", "-c", script, sys.executable, "-c", CHECK, str(out), *stage],
                            cwd=tmp_path / "w", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["rc"] == 2, report["stderr"]
    assert "reconstruct failed: disk full: could not write data/fake3/" in report["stderr"]
    assert not [name for name in report["files"] if ".partial" in name], report["files"]
    reference = digests(workspace / "data/fake")
    assert 0 < len(report["files"]) < len(reference)
    assert all(reference[name] == digest for name, digest in report["files"].items()), "a fake on tmpfs is truncated"
