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

from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.data.fetch import FetchConfig, run_fetch

ROOT = Path(tempfile.gettempdir()) / "aligned-forensics-bench-fetch"
ARCHIVE = ROOT / "serve" / "zips" / "train2017.zip"
SETTLE_S = 15
MEMBERS, DISTINCT, COUNT, REPEATS, WIDTH, HEIGHT = 100_000, 300, 1000, 3, 96, 72  # JPEG sides: multiples of 8


def build_archive() -> None:
    """100,000 members train2017/<id>.jpg cycling over a few hundred distinct small JPEGs, stored uncompressed."""
    if ARCHIVE.is_file():
        return
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(DISTINCT):  # smooth random colour field + sensor-like noise, JPEG quality 75
        low = Image.fromarray(rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8))
        pixels = np.asarray(low.resize((WIDTH, HEIGHT), Image.BICUBIC)) + rng.normal(0, 20, (HEIGHT, WIDTH, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer := io.BytesIO(), "JPEG", quality=75)
        jpegs.append(buffer.getvalue())
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    partial_path = ARCHIVE.with_suffix(".partial")
    with zipfile.ZipFile(partial_path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(MEMBERS):
            archive.writestr(f"train2017/{i + 1:012d}.jpg", jpegs[i % DISTINCT])
    partial_path.replace(ARCHIVE)


def peak_mib() -> float:
    """This process's own peak RSS (VmHWM): ru_maxrss would inherit the parent's peak across fork+exec."""
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024  # Linux only


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
    with (requests.get(f"http://127.0.0.1:{port}/zips/train2017.zip", stream=True, timeout=60) as response,
          open(downloads / "train2017.zip", "wb") as handle):
        response.raise_for_status()
        shutil.copyfileobj(response.raw, handle, 1 << 20)  # no Content-Encoding from http.server: raw is the file
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
            "total": done - started, "rss_before": before, "rss_peak": peak_mib()}


def child(method: str, port: int, downloads: Path, work: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter (own peak RSS), after the disk has settled."""
    os.sync()  # writeback of the last run's 100,000 files otherwise slows the next extraction up to 4x
    time.sleep(SETTLE_S)
    args = [sys.executable, __file__, method, str(port), str(downloads), str(work)]
    env = os.environ | {"TQDM_DISABLE": "1", "DVC_NO_ANALYTICS": "1"}  # run_fetch's warnings go to stderr
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
    build_archive()
    print(f"archive: {MEMBERS:,} members, {ARCHIVE.stat().st_size / 2**20:,.1f} MiB, ZIP_STORED", flush=True)
    server = serve(ARCHIVE.parent.parent)
    port = server.server_address[1]
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "ours_cached": [], "extract": []}
    for repeat in range(REPEATS):
        with tempfile.TemporaryDirectory(dir=ROOT) as scratch:
            tmp = Path(scratch)
            runs["ours"].append(child("ours", port, tmp / "dl-ours", tmp / "ours"))
            runs["ours_cached"].append(child("ours", port, tmp / "dl-ours", tmp / "ours-cached"))
            runs["extract"].append(child("extract", port, tmp / "dl-extract", tmp / "extract"))
            for other in ("extract", "ours-cached"):  # same 1,000 names, byte for byte
                names = sorted(path.name for path in (tmp / other / "real/train").iterdir())
                matched = filecmp.cmpfiles(tmp / "ours/real/train", tmp / other / "real/train", names, shallow=False)
                assert len(names) == COUNT and matched[0] == names, (other, matched[1:])
        print(f"repeat {repeat + 1}: " + json.dumps({k: round(v[-1]["total"], 2) for k, v in runs.items()}), flush=True)
    server.shutdown()
    for run in runs["extract"]:
        run["extract_copy"] = run["extract"] + run["copy"]

    def median(method: str, key: str = "total") -> float:
        return statistics.median(run[key] for run in runs[method])

    def cell(method: str, key: str = "total") -> str:
        values = [run[key] for run in runs[method]]
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    def rss(method: str) -> str:
        return f"{max(r['rss_peak'] for r in runs[method]):.0f} ({max(r['rss_before'] for r in runs[method]):.0f})"

    print(f"\nmedian (min–max) of {REPEATS}; the 1,000 written files are byte-identical between methods\n")
    print("| method | download s | select or extract s | write s | total s | peak RSS MiB (after imports) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method, label, download in (("ours", "ours, empty cache", "incl."), ("ours_cached", "ours, cached", "–")):
        print(f"| {label} | {download} | incl. | incl. | {cell(method)} | {rss(method)} |")
    print(f"| extract first | {cell('extract', 'download')} | {cell('extract', 'extract')} | "
          f"{cell('extract', 'copy')} | {cell('extract')} | {rss('extract')} |")
    print(f"\nextract first / ours: {median('extract') / median('ours'):.1f}x incl. download, "
          f"{median('extract', 'extract_copy') / median('ours_cached'):.1f}x with the archive cached "
          "(extract+copy vs select+write)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
