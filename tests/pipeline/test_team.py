"""docs/experiments-and-teams.md: a DVC remote on a real S3 API server (moto) on 127.0.0.1, and a queued sweep.

The commands are the documented ones: push from the project that ran `dvc repro`, pull into fresh `git clone`s, a pull
with one object deleted from the bucket, then `dvc exp run --queue` × 4 and `dvc queue start -j 2`.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import logging
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_PARAMS
from tests.projects import ENV, make_project, run

pytestmark = pytest.mark.slow

BUCKET = "aligned-forensics"
PREFIX = "cache"
KEY = "testing"  # moto accepts any credentials; never real ones
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
# The sweep changes training only, so a small, fast detector keeps 4 experiments short.
PARAMS = copy.deepcopy(TINY_PARAMS)
PARAMS["train"] |= {"arch": "cnn6", "lr": 1e-3, "max_epochs": 1}


@pytest.fixture(scope="module")
def s3():
    """A real S3 API server (moto) on a free port of 127.0.0.1, holding one empty bucket; yields its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client(url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def client(url: str):
    """boto3 on the loopback server only (explicit endpoint and fake credentials)."""
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY, aws_secret_access_key=KEY,
                        region_name="us-east-1")


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory) -> dict[str, str]:
    """ENV without any AWS credentials or config of this machine, and no instance-metadata lookups."""
    missing = tmp_path_factory.mktemp("aws") / "none"
    env = {name: value for name, value in ENV.items() if not name.startswith("AWS_")}
    return env | {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(missing),
                  "AWS_SHARED_CREDENTIALS_FILE": str(missing)}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project after `dvc repro`, its results committed (what the GPU machine has)."""
    folder = make_project(tmp_path_factory.mktemp("project"), PARAMS)
    run(["dvc", "repro"], folder)
    run([*GIT, "add", "-A"], folder)
    run([*GIT, "commit", "-qm", "results"], folder)
    return folder


def credentials(folder: Path, env: dict[str, str]) -> None:
    """Each clone's own credentials, in .dvc/config.local (never committed)."""
    run(["dvc", "remote", "modify", "--local", "team", "access_key_id", KEY], folder, env=env)
    run(["dvc", "remote", "modify", "--local", "team", "secret_access_key", KEY], folder, env=env)


@pytest.fixture(scope="module")
def pushed(project, s3, s3_env) -> Path:
    """The project with the remote configured and committed, after `dvc push`."""
    run(["dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/{PREFIX}"], project, env=s3_env)
    run(["dvc", "remote", "modify", "team", "endpointurl", s3], project, env=s3_env)
    credentials(project, s3_env)
    run([*GIT, "add", ".dvc/config"], project)
    run([*GIT, "commit", "-qm", "DVC remote"], project)
    run(["dvc", "push"], project, env=s3_env)
    return project


def clone(source: Path, folder: Path, env: dict[str, str]) -> Path:
    run(["git", "clone", "-q", str(source), str(folder)], folder.parent)
    credentials(folder, env)
    return folder


def test_a_fresh_clone_pulls_every_output_and_repro_runs_nothing(pushed, s3_env, tmp_path):
    assert "team" in (pushed / ".dvc/config").read_text()
    assert KEY not in (pushed / ".dvc/config").read_text()  # credentials stay in config.local
    cache = tmp_path / "machine-cache"
    other = clone(pushed, tmp_path / "clone", s3_env)
    shared_cache(other, cache)
    assert not (other / "data").exists()
    run(["dvc", "pull"], other, env=s3_env)
    for name in ("data/model/best.pt", "data/manifest/train.csv", "data/bundle/detector.pt"):
        assert (other / name).read_bytes() == (pushed / name).read_bytes(), name
    up_to_date(other, s3_env)
    # A second user's clone on the same machine: everything comes from the shared cache, no remote, no run.
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(pushed), str(second)], tmp_path)
    shared_cache(second, cache)
    run(["dvc", "checkout"], second, env=s3_env)
    up_to_date(second, s3_env)
    model = second / "data/model/best.pt"
    assert model.stat().st_nlink == 3 and model.samefile(other / "data/model/best.pt")  # cache + 2 workspaces
    folders = {path.stat().st_mode & 0o7777 for path in cache.rglob("*") if path.is_dir()}
    assert folders == {0o2775}, sorted(map(oct, folders))  # group-writable, setgid: every user can add
    files = {path.stat().st_mode & 0o7777 for path in cache.rglob("*") if path.is_file()}
    assert files == {0o444}, sorted(map(oct, files))  # and nobody can change what is cached


def shared_cache(folder: Path, cache: Path) -> None:
    run(["dvc", "cache", "dir", "--local", str(cache)], folder)
    run(["dvc", "config", "--local", "cache.shared", "group"], folder)


def up_to_date(folder: Path, env: dict[str, str]) -> None:
    """`dvc status` is clean and `dvc repro` skips every stage."""
    status = run(["dvc", "status"], folder, env=env)
    assert "Data and pipelines are up to date." in status.stdout, status.stdout
    repro = run(["dvc", "repro"], folder, env=env)
    output = repro.stdout + repro.stderr
    assert "Running stage" not in output, output
    stages = run(["dvc", "stage", "list", "--name-only"], folder).stdout.split()
    assert output.count("didn't change, skipping") == len(stages) > 10, output


def test_a_pull_with_an_object_missing_from_the_bucket_names_the_incomplete_output(pushed, s3, s3_env, tmp_path):
    real = sorted((pushed / "data/real").rglob("*.jpg"))[0]
    md5 = hashlib.md5(real.read_bytes()).hexdigest()
    key = f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}"
    bucket = client(s3)
    kept = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    bucket.delete_object(Bucket=BUCKET, Key=key)
    try:
        other = clone(pushed, tmp_path / "clone", s3_env)
        pull = run(["dvc", "pull"], other, env=s3_env, check=False)
        assert pull.returncode != 0
        assert f"failed to transfer '{md5}'" in pull.stderr, pull.stderr
        assert "failed to pull data from the cloud" in pull.stderr, pull.stderr
        cloud = run(["dvc", "status", "--cloud"], other, env=s3_env, check=False)
        missing = real.relative_to(pushed).as_posix()
        assert f"deleted:            {missing}" in cloud.stdout, cloud.stdout
        checkout = run(["dvc", "checkout"], other, env=s3_env, check=False)
        assert checkout.returncode != 0
        failed = checkout.stderr.split("Checkout failed for following targets:", 1)[1].split("Is your cache")[0]
        assert failed.split() == ["data/real"], checkout.stderr
        assert (other / "data/model/best.pt").is_file()  # every complete output is checked out
        status = run(["dvc", "status"], other, env=s3_env)
        assert "not in cache:       data/real" in status.stdout, status.stdout
    finally:
        bucket.put_object(Bucket=BUCKET, Key=key, Body=kept)


def test_a_queued_sweep_runs_two_at_a_time_and_exp_show_compares_it(project):
    queued = run(["dvc", "exp", "run", "--queue", "-S", "train.seed=1,2", "-S", "train.lr=0.001,0.0003"], project)
    assert queued.stdout.count("Queued experiment") == 4, queued.stdout
    status = run_queue(project, workers=2)
    assert status.count("Success") + status.count("Failed") == 4, status
    # DVC's queue has a known race between several workers (treeverse/dvc#10673): now and then a task ends
    # Failed with no log (1 of 4, once in three runs here). The documented remedy: queue what is missing again
    # and run it with one worker, which has no race.
    missing = sorted(SWEEP - set(finished(project)))
    assert len(missing) == status.count("Failed"), (missing, status)
    for seed, lr in missing:
        run(["dvc", "exp", "run", "--queue", "-S", f"train.seed={seed}", "-S", f"train.lr={lr}"], project)
    if missing:
        run_queue(project, workers=1)
    rows = finished(project)
    assert sorted(rows) == sorted(SWEEP), rows
    for row in rows.values():
        assert 0 <= float(row["metrics/eval.json:ap"]) <= 1, row


SWEEP = {("1", "0.0003"), ("1", "0.001"), ("2", "0.0003"), ("2", "0.001")}  # train.seed x train.lr


def run_queue(project: Path, *, workers: int) -> str:
    """`dvc queue start -j workers`, wait (at most 10 minutes) until nothing is queued or running, stop."""
    try:
        run(["dvc", "queue", "start", "-j", str(workers)], project)
        deadline = time.monotonic() + 600
        while "Queued" in (status := queue_status(project)) or "Running" in status:
            assert time.monotonic() < deadline, status
            time.sleep(5)
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False)
    return status


def finished(project: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(seed, lr) -> the `dvc exp show --only-changed --csv` row of each finished experiment."""
    shown = run(["dvc", "exp", "show", "--only-changed", "--csv"], project).stdout
    rows = [row for row in csv.DictReader(io.StringIO(shown)) if row["typ"].startswith("branch_")]  # not baseline
    return {(row["train.seed"], row["train.lr"]): row for row in rows}


def queue_status(project: Path) -> str:
    return run(["dvc", "queue", "status"], project).stdout
