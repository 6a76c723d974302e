"""Scale: the manifest stage and DVC on 10k, 30k and 100k tiny image pairs. Does anything grow faster than linear?

Each size gets a folder of N unique 8x8 JPEG reals and N 8x8 PNG fakes (data/real/<split>, data/fake/<split>),
the fetch index and an empty reconstruct rejects list. The manifest stage's library (build_manifest +
write_manifest) runs in a fresh interpreter per measurement, with and without verify_decode, and reports wall
time and the process's own peak RSS (VmHWM). Its baseline, measured in the same run, is the floor of any
manifest: read the index, list the fake folders and write one CSV row per pair, no image opened. Then a git+DVC
project holds the pairs as deps of a one-line stage (cache.type hardlink,symlink as in this repository): first
`dvc repro` (hash and link every file), a no-op `dvc status` and a no-op `dvc repro`.

Usage, from the repository root (needs ~1 GiB free in the temp folder; about 10 minutes on 2 cores):
    .venv/bin/python bench/scale.py [--sizes 10000 30000 100000] [--dvc-jobs N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from aligned_forensics.common.images import encode_jpeg, encode_png  # noqa: E402
from aligned_forensics.data.fetch import INDEX_COLUMNS  # noqa: E402

SPLIT_SHARES = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def make_pairs(folder: Path, count: int) -> None:
    """`count` unique 8x8 pairs in the layout fetch and reconstruct write, plus their index and rejects."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        split = next(name for name, share in _cumulative() if index < share * count)
        stem = f"scale-{index:07d}"
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        real = folder / "data/real" / split / f"{stem}.jpg"
        fake = folder / "data/fake" / split / f"{stem}.png"
        real.parent.mkdir(parents=True, exist_ok=True)
        fake.parent.mkdir(parents=True, exist_ok=True)
        real.write_bytes(encode_jpeg(pixels, quality=90))
        fake.write_bytes(encode_png(255 - pixels))
        rows.append({"stem": stem, "split": split, "source": "scale", "path": real.relative_to(folder).as_posix(),
                     "width": 8, "height": 8, "format": "jpeg", "source_format": "jpeg", "processing": "none",
                     "origin": f"scale:{index}"})
    for name, columns, table in (("data/fetch/index.csv", INDEX_COLUMNS, rows),
                                 ("data/reconstruct/rejects.csv", ("path", "stage", "reason"), [])):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with open(folder / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(table)


def _cumulative() -> list[tuple[str, float]]:
    total, out = 0.0, []
    for name, share in SPLIT_SHARES:
        total += share
        out.append((name, total + (1e-9 if name == "test" else 0.0)))
    return out


MEASURE = r"""
import json, os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
os.chdir(sys.argv[2])
mode = sys.argv[3]
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.data.manifest import ManifestConfig, build_manifest, write_manifest
def peak():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024
before = peak()
started = time.perf_counter()
if mode == "floor":
    index = read_csv(Path("data/fetch/index.csv"))
    fakes = {p.name[:-4] for split in ("train", "val", "test") for p in os.scandir(f"data/fake/{split}")}
    rows = [{"stem": r["stem"], "real_path": r["path"], "fake_path": f"data/fake/{r['split']}/{r['stem']}.png"}
            for r in sorted(index, key=lambda r: r["stem"]) if r["stem"] in fakes]
    write_csv(Path("data/floor.csv"), rows, ("stem", "real_path", "fake_path"))
else:
    config = ManifestConfig(verify_decode=mode == "verify")
    rows, rejects = build_manifest(config, index_path=Path("data/fetch/index.csv"), fake_dir=Path("data/fake"),
                                   upstream_rejects=[Path("data/reconstruct/rejects.csv")])
    counts = write_manifest(rows, rejects, Path("data/manifest"))
    assert counts["rejected"] == 0, counts
print(json.dumps({"seconds": time.perf_counter() - started, "peak_mib": peak(), "imports_mib": before}))
"""


def measure_manifest(folder: Path, mode: str) -> dict[str, float]:
    """One manifest build in a fresh interpreter (page cache warm: the folder was just written)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT / "src"), str(folder), mode], check=True,
                         capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    return json.loads(out.stdout.splitlines()[-1])


DVC_YAML = """stages:
  count:
    cmd: python -c "import os; print(sum(len(f) for _, _, f in os.walk('data/real')))" > count.txt
    deps:
      - data/real
      - data/fake
    outs:
      - count.txt:
          cache: false
"""


def measure_dvc(folder: Path, jobs: int | None) -> dict[str, float]:
    """First `dvc repro` (hashes every dep file), then a no-op `dvc status` and `dvc repro`, in seconds."""
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "1"}

    def timed(*args: str) -> float:
        started = time.perf_counter()
        subprocess.run(args, cwd=folder, env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    (folder / "dvc.yaml").write_text(DVC_YAML)
    (folder / ".gitignore").write_text("/data/\n")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    timed("dvc", "init", "-q")
    timed("dvc", "config", "cache.type", "hardlink,symlink")
    timed("dvc", "config", "core.analytics", "false")
    if jobs:
        timed("dvc", "config", "core.checksum_jobs", str(jobs))
    return {"first_repro": timed("dvc", "repro"), "noop_status": timed("dvc", "status"),
            "noop_repro": timed("dvc", "repro")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--dvc-jobs", type=int, default=None, help="core.checksum_jobs (default: DVC's own)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; columns: pairs, build s, then per mode s (µs/pair) peak MiB, then DVC s",
          flush=True)
    results = []
    for count in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"scale-{count}-"))
        try:
            started = time.perf_counter()
            make_pairs(folder, count)
            row: dict[str, object] = {"pairs": count, "build_s": time.perf_counter() - started}
            for mode in ("floor", "headers", "verify"):
                row[mode] = measure_manifest(folder, mode)
            shutil.rmtree(folder / "data/manifest", ignore_errors=True)
            (folder / "data/floor.csv").unlink(missing_ok=True)
            row["dvc"] = measure_dvc(folder, args.dvc_jobs)
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    print("\n| pairs (files) | manifest floor s | headers s (µs/pair) | verify_decode s (µs/pair) | peak RSS MiB "
          "floor / headers / verify | first `dvc repro` s | no-op `dvc status` s | no-op `dvc repro` s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in results:
        count = row["pairs"]
        cells = [f"{row[m]['seconds']:.2f}" + ("" if m == "floor" else f" ({row[m]['seconds'] / count * 1e6:.0f})")
                 for m in ("floor", "headers", "verify")]
        peaks = " / ".join(str(row[m]["peak_mib"]) for m in ("floor", "headers", "verify"))
        dvc = row["dvc"]
        print(f"| {count:,} ({2 * count:,}) | {' | '.join(cells)} | {peaks} | {dvc['first_repro']:.1f} | "
              f"{dvc['noop_status']:.1f} | {dvc['noop_repro']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
