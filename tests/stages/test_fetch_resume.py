"""Killing the fetch stage in the middle of a download, then running it again, resumes the download."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from aligned_forensics.common.io import read_csv
from tests.dataset_archives import coco_images, coco_zip, md5

ROOT = Path(__file__).resolve().parents[2]


def test_killed_download_resumes_where_it_stopped(http, tmp_path):
    archive = coco_zip("val2017", coco_images(12), extra={"annotations.bin": os.urandom(3_000_000)})
    http.files["/zips/val2017.zip"] = archive
    http.throttle_s = 0.05  # ~46 chunks of 64 KiB: over two seconds, time enough to kill it midway
    source = {"kind": "coco", "split": "val", "count": 5, "url": http.url("/zips/"), "checksum": md5(archive)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": {"seed": 0, "sources": [source]}}))
    command = [sys.executable, str(ROOT / "stages/fetch.py"), "--downloads", "cache"]
    partial = tmp_path / "cache" / "val2017.zip.partial"
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 500_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    reached = partial.stat().st_size
    assert 0 < reached < len(archive) and not (tmp_path / "data" / "real").exists()

    http.throttle_s = 0.0
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert http.gets("/zips/val2017.zip")[-1] == f"bytes={reached}-"
    assert (tmp_path / "cache" / "val2017.zip").read_bytes() == archive
    assert len(read_csv(tmp_path / "data" / "fetch" / "index.csv")) == 5
