"""Selecting 1,000 COCO images straight out of a served 100,000-member zip vs extracting the whole archive first.

Usage, from the repository root (builds a ~300 MB test archive under /tmp once, reused by later runs):
    .venv/bin/python bench/fetch.py
"""

from __future__ import annotations

import filecmp
import http.server
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

from aligned_forensics.fetch import FetchConfig, run_fetch
from aligned_forensics.sampling import seeded_subset

ROOT = Path(tempfile.gettempdir()) / "aligned-forensics-bench-fetch"
ARCHIVE = ROOT / "serve" / "zips" / "train2017.zip"
MEMBERS, DISTINCT, COUNT, REPEATS = 100_000, 300, 1000, 3
WIDTH, HEIGHT = 96, 72


def build_archive() -> None:
    """100,000 members train2017/<id>.jpg cycling over a few hundred distinct small JPEGs, stored uncompressed."""
    if ARCHIVE.is_file():
        return
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(DISTINCT):  # smooth random colour field + sensor-like noise, JPEG quality 75
        low = Image.fromarray(rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8))
        pixels = np.asarray(low.resize((WIDTH, HEIGHT), Image.BICUBIC), dtype=np.float32)
        pixels += rng.normal(0, 20, pixels.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
        jpegs.append(buffer.getvalue())
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    partial_path = ARCHIVE.with_suffix(".partial")
    with zipfile.ZipFile(partial_path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(MEMBERS):
            archive.writestr(f"train2017/{i + 1:012d}.jpg", jpegs[i % DISTINCT])
    partial_path.replace(ARCHIVE)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def ours(port: int, downloads: Path, work: Path) -> dict[str, float]:
    """run_fetch: download (unless cached), seeded selection, write only the chosen members."""
    config = FetchConfig(seed=0, sources=({"kind": "coco", "split": "train", "count": COUNT,
                                           "url": f"http://127.0.0.1:{port}/zips/", "checksum": "",
                                           "multiple_of": 0, "use_as": "train"},))
    before, started = peak_mib(), time.perf_counter()
    counts = run_fetch(config, out_dir=work / "real", index_path=work / "fetch/index.csv",
                       rejects_path=work / "fetch/rejects.csv", downloads=downloads)
    assert counts["images"] == COUNT, counts
    return {"total": time.perf_counter() - started, "rss_before": before, "rss_peak": peak_mib()}


def extract_first(port: int, downloads: Path, work: Path) -> dict[str, float]:
    """Baseline: stream the zip to disk, extractall, copy the same seeded 1,000 files."""
    before, started = peak_mib(), time.perf_counter()
    downloads.mkdir(parents=True, exist_ok=True)
    with requests.get(f"http://127.0.0.1:{port}/zips/train2017.zip", stream=True, timeout=60) as response:
        response.raise_for_status()
        with open(downloads / "train2017.zip", "wb") as handle:
            for chunk in response.iter_content(chunk_size=1 << 20):
                handle.write(chunk)
    downloaded = time.perf_counter()
    with zipfile.ZipFile(downloads / "train2017.zip") as archive:
        archive.extractall(work / "extracted")
        members = [name for name in archive.namelist() if name.endswith(".jpg")]
    extracted = time.perf_counter()
    (work / "real/train").mkdir(parents=True)
    for member in seeded_subset(sorted(members), COUNT, seed=0, stream=0xC0C0):
        shutil.copyfile(work / "extracted" / member, work / f"real/train/coco-{Path(member).stem}.jpg")
    done = time.perf_counter()
    return {"download": downloaded - started, "extract": extracted - downloaded, "copy": done - extracted,
            "rss_before": before, "rss_peak": peak_mib()}


def child(method: str, port: int, downloads: Path, work: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter, so its peak RSS is its own."""
    env = os.environ | {"TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1"}
    args = [sys.executable, __file__, method, str(port), str(downloads), str(work)]
    return json.loads(subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout)


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    if len(sys.argv) == 5:  # child mode: <method> <port> <downloads> <work>
        method, port, downloads, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
        print(json.dumps({"ours": ours, "extract": extract_first}[method](port, downloads, work)))
        return 0
    started = time.perf_counter()
    build_archive()
    print(f"archive: {MEMBERS:,} members, {ARCHIVE.stat().st_size / 2**20:,.1f} MiB "
          f"(ready in {time.perf_counter() - started:.1f} s)", flush=True)
    server = serve(ARCHIVE.parent.parent)
    port = server.server_address[1]
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "ours_cached": [], "extract": []}
    for repeat in range(REPEATS):
        with tempfile.TemporaryDirectory(dir=ROOT) as scratch:
            tmp = Path(scratch)
            runs["ours"].append(child("ours", port, tmp / "dl-ours", tmp / "ours"))
            runs["ours_cached"].append(child("ours", port, tmp / "dl-ours", tmp / "ours-cached"))
            runs["extract"].append(child("extract", port, tmp / "dl-extract", tmp / "extract"))
            names = sorted(p.name for p in (tmp / "ours/real/train").iterdir())
            assert len(names) == COUNT and names == sorted(p.name for p in (tmp / "extract/real/train").iterdir())
            _, mismatch, errors = filecmp.cmpfiles(tmp / "ours/real/train", tmp / "extract/real/train", names,
                                                   shallow=False)
            assert not mismatch and not errors, (mismatch, errors)
            assert filecmp.cmpfiles(tmp / "ours/real/train", tmp / "ours-cached/real/train", names,
                                    shallow=False)[0] == names
        print(f"repeat {repeat + 1}/{REPEATS}: {json.dumps(runs['extract'][-1])}", flush=True)
    server.shutdown()

    def median(method: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[method])

    def rss(method: str) -> str:
        return f"{max(r['rss_peak'] for r in runs[method]):.0f} ({max(r['rss_before'] for r in runs[method]):.0f})"

    extract_copy = statistics.median(run["extract"] + run["copy"] for run in runs["extract"])
    extract_all = statistics.median(run["download"] + run["extract"] + run["copy"] for run in runs["extract"])
    print(f"\nmedian of {REPEATS}; 1,000 files byte-identical between methods\n")
    print("| method | download s | select/extract + write s | total s | peak RSS MiB (at start) |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| ours, empty cache | (incl.) | (incl.) | {median('ours', 'total'):.2f} | {rss('ours')} |")
    print(f"| ours, archive cached | – | {median('ours_cached', 'total'):.2f} | {median('ours_cached', 'total'):.2f} "
          f"| {rss('ours_cached')} |")
    print(f"| extract first | {median('extract', 'download'):.2f} | {median('extract', 'extract'):.2f} + "
          f"{median('extract', 'copy'):.2f} | {extract_all:.2f} | {rss('extract')} |")
    print(f"\nratio incl. download: {extract_all / median('ours', 'total'):.1f}x; "
          f"archive cached (extract+copy vs ours): {extract_copy / median('ours_cached', 'total'):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
