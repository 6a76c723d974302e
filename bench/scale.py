"""Scale: the manifest stage and DVC on 10k, 30k and 100k tiny image pairs. Does anything grow faster than linear?

Each size gets a folder of N unique 8x8 JPEG reals and N 8x8 PNG fakes (data/real/<split>, data/fake/<split>),
the fetch index and an empty reconstruct rejects list. The manifest stage's library (build_manifest +
write_manifest) runs in a fresh interpreter per measurement, with and without verify_decode, and reports wall
time and the process's own peak RSS (VmHWM). Its baseline, measured in the same run, is the floor of any
manifest: read the index, list the fake folders and write one CSV row per pair, no image opened. Then a git+DVC
project (cache.type hardlink,symlink as in this repository) holds the pairs twice over: first as deps of a one-line
stage (first `dvc repro`, no-op `dvc status` and `dvc repro`), then with the data edges of this repository's
dvc.yaml (fetch, reconstruct and manifest with their data/ deps and outs; recorded by `dvc commit -f`, then no-op
`dvc status` and `dvc repro`), which is what a no-op status of the real pipeline checks. Wall and CPU seconds.

Usage, from the repository root (needs ~1 GiB free in the temp folder; about 15 minutes on 2 cores):
    .venv/bin/python bench/scale.py [--sizes 10000 30000 100000] [--dvc-jobs N] [--dvc-only]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
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
DATA_STAGES = ("fetch", "reconstruct", "manifest")


def pipeline_yaml() -> str:
    """This repository's fetch, reconstruct and manifest stages with their data/ deps and outs only, as declared.

    Code and params deps are dropped (the project holds no code); every data/ edge, with its flags (`persist`),
    is kept, so the measurement follows dvc.yaml: a directory listed by three stages is hashed three times.
    """
    import yaml

    declared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def data_only(entries: list) -> list:
        return [entry for entry in entries if (next(iter(entry)) if isinstance(entry, dict) else entry)
                .startswith("data/")]

    stages = {name: {"cmd": "true", "deps": data_only(declared[name].get("deps", [])),
                     "outs": data_only(declared[name]["outs"])} for name in DATA_STAGES}
    return yaml.safe_dump({"stages": stages}, sort_keys=False)


def _init_project(folder: Path, env: dict[str, str], jobs: int | None) -> None:
    (folder / ".gitignore").write_text("/data/\n")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    for args in (["init", "-q"], ["config", "cache.type", "hardlink,symlink"], ["config", "core.analytics", "false"],
                 *([["config", "core.checksum_jobs", str(jobs)]] if jobs else [])):
        subprocess.run(["dvc", *args], cwd=folder, env=env, check=True, capture_output=True)


def _timed(folder: Path, env: dict[str, str], *args: str) -> dict[str, float]:
    """Wall and CPU (user + system of the child) seconds of one command."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run(args, cwd=folder, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = os.times()
    return {"wall": wall, "cpu": after.children_user + after.children_system - before.children_user
            - before.children_system}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def measure_dvc(folder: Path, jobs: int | None, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Two projects on the same pairs, each timed first, then no-op `dvc status` and `dvc repro` (median of repeats).

    `one_stage`: one stage depending on data/real and data/fake (each directory hashed once per status; the
    figure this benchmark always reported). `pipeline`: the data edges of this repository's dvc.yaml (fetch
    writes data/real, reconstruct reads it and writes data/fake, manifest reads both), recorded with
    `dvc commit -f` (stage commands would delete their outputs) and then checked exactly as `dvc status` checks
    the real pipeline: every output against the cache and the workspace, every dep against dvc.lock.
    """
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "1"}
    _init_project(folder, env, jobs)
    results: dict[str, dict[str, float]] = {}
    (folder / "dvc.yaml").write_text(DVC_YAML)
    results["one_stage_first_repro"] = _timed(folder, env, "dvc", "repro")
    results["one_stage_status"] = _median([_timed(folder, env, "dvc", "status") for _ in range(repeats)])
    results["one_stage_repro"] = _median([_timed(folder, env, "dvc", "repro") for _ in range(repeats)])
    (folder / "dvc.lock").unlink()
    (folder / "count.txt").unlink()
    (folder / "dvc.yaml").write_text(pipeline_yaml())
    for name in ("data/manifest/train.csv", "data/autoencoder/config.json"):  # small stand-ins: their size is moot
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}\n")
    results["pipeline_commit"] = _timed(folder, env, "dvc", "commit", "-f")
    results["pipeline_status"] = _median([_timed(folder, env, "dvc", "status") for _ in range(repeats)])
    results["pipeline_repro"] = _median([_timed(folder, env, "dvc", "repro") for _ in range(repeats)])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--dvc-jobs", type=int, default=None, help="core.checksum_jobs (default: DVC's own)")
    parser.add_argument("--dvc-only", action="store_true", help="skip the manifest measurements")
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
            for mode in () if args.dvc_only else ("floor", "headers", "verify"):
                row[mode] = measure_manifest(folder, mode)
            shutil.rmtree(folder / "data/manifest", ignore_errors=True)
            (folder / "data/floor.csv").unlink(missing_ok=True)
            row["dvc"] = measure_dvc(folder, args.dvc_jobs)
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    if not args.dvc_only:
        print_manifest_table(results)
    print("\n| pairs (files) | one stage: first `dvc repro` s | no-op `dvc status` s (CPU s) | no-op `dvc repro` s "
          "| pipeline's data edges: `dvc commit` s | no-op `dvc status` s (CPU s) | no-op `dvc repro` s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in results:
        dvc = row["dvc"]
        print(f"| {row['pairs']:,} ({2 * row['pairs']:,}) | {dvc['one_stage_first_repro']['wall']:.1f} | "
              f"{dvc['one_stage_status']['wall']:.1f} ({dvc['one_stage_status']['cpu']:.1f}) | "
              f"{dvc['one_stage_repro']['wall']:.1f} | {dvc['pipeline_commit']['wall']:.1f} | "
              f"{dvc['pipeline_status']['wall']:.1f} ({dvc['pipeline_status']['cpu']:.1f}) | "
              f"{dvc['pipeline_repro']['wall']:.1f} |")
    return 0


def print_manifest_table(results: list[dict]) -> None:
    print("\n| pairs (files) | manifest floor s | headers s (µs/pair) | verify_decode s (µs/pair) | peak RSS MiB "
          "floor / headers / verify |")
    print("| --- | --- | --- | --- | --- |")
    for row in results:
        count = row["pairs"]
        cells = [f"{row[m]['seconds']:.2f}" + ("" if m == "floor" else f" ({row[m]['seconds'] / count * 1e6:.0f})")
                 for m in ("floor", "headers", "verify")]
        peaks = " / ".join(str(row[m]["peak_mib"]) for m in ("floor", "headers", "verify"))
        print(f"| {count:,} ({2 * count:,}) | {' | '.join(cells)} | {peaks} |")


if __name__ == "__main__":
    raise SystemExit(main())
