"""One GPU benchmark (bench/gpu.sh): reconstruction, training and scoring throughput, and per-image byte identity.

Reconstruction runs the paper's KL-f8 autoencoder architecture and the SD/SDXL VAE's (random weights built from
the configs in assets/autoencoders/configs; weights do not change the cost) through the real `run_reconstruct`
(size buckets, prefetch, async PNG writes) at 256² and 512², fp32 and bf16, batch 1/16/64, beside the original's
loop (batch 64 DataLoader, encode, posterior sample, decode, ToPILImage, synchronous PIL saves) in the same run.
Achieved FLOP/s (FLOPs counted by torch's FlopCounterMode) is reported as a fraction of the card's dense bf16
conv throughput, measured first. Training: res50nodown optimiser steps (fp32 vs bf16 autocast, channels_last;
deterministic vs not, in a child process because cuBLAS reads its workspace setting once; and with the `roundtrip`
input around the SD VAE architecture, two round trips of every crop per step). Scoring: res50nodown
on full images of mixed sizes. Every measurement has a time budget; the whole run is planned for < 8 min on an
H100/H200. Writes bench/results/gpu-<card>.json and a marked table block in bench/RESULTS.md.

    bash bench/gpu.sh                       # on a GPU machine
    bash bench/gpu.sh --tiny --out DIR      # the CPU fallback at tiny sizes (what the test runs)
"""

from __future__ import annotations

import argparse
import os
import sys

if "--deterministic-child" in sys.argv:  # before torch loads: cuBLAS reads it when it starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("TQDM_DISABLE", "1")

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpu_parts as parts  # noqa: E402
from aligned_forensics.common.images import decode_rgb  # noqa: E402
from aligned_forensics.common.io import atomic_write_bytes  # noqa: E402
from aligned_forensics.evaluation.scoring import ScoreItem  # noqa: E402
from gpu_report import markdown, replace_block  # noqa: E402

CONFIGS = {"kl-f8-ldm": ROOT / "assets/autoencoders/configs/kl-f8-ldm.json",
           "sd-sdxl-vae": ROOT / "assets/autoencoders/configs/sd-sdxl-vae.json"}


@dataclass(frozen=True)
class Plan:
    """Sizes and per-measurement time budgets (seconds) of one run."""

    sides: tuple[int, ...]
    batches: tuple[int, ...]
    pool: dict[int, int]  # side -> images written once
    overrides: dict[str, Any]  # applied to the committed autoencoder configs
    peak_shapes: list[tuple[int, int, int]]  # (batch, channels, side)
    original_batch: int
    train_batch: int
    train_crop: int
    score_sizes: tuple[tuple[int, int], ...]  # (height, width)
    score_per_size: int
    score_batches: tuple[int, ...]
    seconds: dict[str, float]


GPU = Plan(sides=(256, 512), batches=(1, 16, 64), pool={256: 1024, 512: 384}, overrides={},
           peak_shapes=[(32, 512, 64), (64, 256, 128), (16, 1024, 32)], original_batch=64, train_batch=64,
           train_crop=96, score_sizes=((480, 640), (640, 480), (512, 512)), score_per_size=32, score_batches=(1, 16),
           seconds={"peak": 6, "reconstruct": 9, "original": 15, "train": 12, "score": 12})
TINY = Plan(sides=(16, 32), batches=(1, 2), pool={16: 4, 32: 4},
            overrides={"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4},
            peak_shapes=[(1, 16, 8)], original_batch=2, train_batch=2, train_crop=8,
            score_sizes=((16, 16), (16, 24)), score_per_size=1, score_batches=(1, 2),
            seconds={"peak": 0.05, "reconstruct": 0.05, "original": 0.05, "train": 0.05, "score": 0.05})
PLANNED_S = 480


class Clock:
    """Prints each finished measurement with the running total against the plan."""

    def __init__(self, planned: float) -> None:
        self.started, self.planned = time.perf_counter(), planned

    def lap(self, what: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s of {self.planned:.0f} s planned] {what}", flush=True)

    def spent(self) -> float:
        return time.perf_counter() - self.started


def card(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info = {"name": name, "device": device.type, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpu_threads": torch.get_num_threads(),
            # fp32 convolutions run as TF32 on Ampere and later when cuDNN allows it (torch's default)
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info |= {"memory_gib": properties.total_memory / 2**30, "capability": f"{properties.major}.{properties.minor}"}
    return info


def architectures(plan: Plan, sides: tuple[int, ...]) -> dict[str, Any]:
    """Parameters and FLOPs per image of each committed config, and whether the two are the same network."""
    result: dict[str, Any] = {}
    for name, path in CONFIGS.items():
        model = parts.build_autoencoder(path, plan.overrides)
        result[name] = {"parameters": sum(p.numel() for p in model.parameters()), "structure": repr(model),
                        "tflop_per_image": {str(s): parts.roundtrip_flops(path, plan.overrides, s) / 1e12
                                            for s in sides}}
    first, second = (result[name] for name in CONFIGS)
    identical = first["structure"] == second["structure"] and first["parameters"] == second["parameters"]
    for entry in result.values():
        del entry["structure"]
    return result | {"identical": identical}


def reconstruction(plan: Plan, device: torch.device, work: Path, pools: dict[int, list], archs: dict[str, Any],
                   peak: float, clock: Clock) -> tuple[list[dict], list[dict]]:
    """Ours for every (architecture, side, dtype, batch), and the original's loop (fp32, batch 64) per side."""
    names = [next(iter(CONFIGS))] if archs["identical"] else list(CONFIGS)
    rows, original = [], []
    io_threads = min(8, os.cpu_count() or 2)
    for name in names:
        label = " = ".join(CONFIGS) if archs["identical"] else name
        for dtype in parts.DTYPES:
            model = parts.build_autoencoder(CONFIGS[name], plan.overrides).to(device, parts.DTYPES[dtype])
            for side in plan.sides:
                flops = archs[name]["tflop_per_image"][str(side)] * 1e12
                for batch in plan.batches:
                    pool = pools[side]
                    warm_count = max(batch, min(16, len(pool)))  # amortise the run's set-up in the estimate
                    warm, _, _ = parts.ours(model, pool[:warm_count], work, device=device, dtype=dtype, batch=batch,
                                            io_threads=io_threads)
                    count = parts.sized(warm_count / warm, plan.seconds["reconstruct"], step=batch, least=2 * batch,
                                        most=len(pool))
                    seconds, _, splits = parts.ours(model, pool[:count], work, device=device, dtype=dtype,
                                                    batch=batch, io_threads=io_threads)
                    rate = count / seconds
                    rows.append({"architecture": label, "side": side, "dtype": dtype, "batch": batch, "images": count,
                                 "seconds": seconds, "images_per_second": rate, "tflops": rate * flops / 1e12,
                                 "fraction_of_bf16_peak": rate * flops / peak, "oom_splits": splits,
                                 "io_threads": io_threads})
                    clock.lap(f"ours {label} {side}² {dtype} batch {batch}: {rate:.1f} img/s")
                if dtype == "fp32":
                    original.append(_original(plan, model, pools[side], work, device, label, side, flops, peak))
                    clock.lap(f"original loop {label} {side}² fp32: {original[-1]['images_per_second']:.1f} img/s")
            del model
    return rows, original


def _original(plan: Plan, model: torch.nn.Module, pool: list, work: Path, device: torch.device, label: str,
              side: int, flops: float, peak: float) -> dict[str, Any]:
    batch = plan.original_batch
    warm = parts.original_loop(model, pool[:batch], work / "original", device=device, batch=batch)
    count = parts.sized(batch / warm, plan.seconds["original"], step=batch, least=batch, most=len(pool))
    seconds = parts.original_loop(model, pool[:count], work / "original", device=device, batch=batch)
    rate = count / seconds
    return {"architecture": label, "side": side, "dtype": "fp32", "batch": batch, "images": count, "seconds": seconds,
            "images_per_second": rate, "tflops": rate * flops / 1e12, "fraction_of_bf16_peak": rate * flops / peak}


def identity(plan: Plan, device: torch.device, work: Path, pools: dict[int, list]) -> dict[str, Any]:
    """forward: per_image must give the same bytes at every batch size; batched is shown for comparison."""
    side, batches = plan.sides[0], plan.batches
    paths = pools[side][:max(batches)]
    model = parts.build_autoencoder(CONFIGS[next(iter(CONFIGS))], plan.overrides).to(device)
    result: dict[str, Any] = {"side": side, "dtype": "fp32", "images": len(paths), "batch_sizes": list(batches)}
    for forward in ("per_image", "batched"):
        outputs = [parts.ours(model, paths, work, device=device, dtype="fp32", batch=batch, io_threads=2,
                              forward=forward)[1] for batch in batches]
        # per_image: the PNG bytes (the recipe chunk does not name the batch size); batched: the pixels
        read = (lambda f: f.read_bytes()) if forward == "per_image" else decode_rgb
        files = [[read(folder / f"{p.stem}.png") for p in paths] for folder in outputs]
        same = [[np.array_equal(a, b) if forward == "batched" else a == b
                 for a, b in zip(files[0], other, strict=True)] for other in files[1:]]
        result[f"{forward}_identical"] = all(all(row) for row in same)
        result[f"{forward}_differing_images"] = int(sum(len(row) - sum(row) for row in same))
    return result


def scoring(plan: Plan, device: torch.device, work: Path, clock: Clock) -> list[dict[str, Any]]:
    items = [ScoreItem(str(path), height, width) for height, width in plan.score_sizes
             for path in parts.make_images(work / "score", width, plan.score_per_size, height=height)]
    rows = []
    for batch in plan.score_batches:
        rows.append(parts.scoring_rate(device, items, batch=batch, seconds=plan.seconds["score"]))
        clock.lap(f"scoring batch {batch}: {rows[-1]['images_per_second']:.1f} img/s")
    return rows


def training(plan: Plan, device: torch.device, tiny: bool, clock: Clock) -> tuple[list[dict], list[dict]]:
    """(fp32 and bf16 rows in this process, plain and deterministic rows from the child process)."""
    variants = [False, True] if device.type == "cuda" else [False]  # autocast is CUDA-only (as in train.py)
    rows = []
    for autocast in variants:
        rows.append(parts.training_rate(device, batch=plan.train_batch, crop=plan.train_crop, autocast=autocast,
                                        deterministic=False, seconds=plan.seconds["train"]))
        clock.lap(f"training {rows[-1]['precision']}: {rows[-1]['images_per_second']:.1f} img/s")
    torch.cuda.empty_cache()  # the child process needs the memory this one keeps cached (a no-op on CPU)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "child.json"
        subprocess.run([sys.executable, __file__, "--deterministic-child", str(out), *(["--tiny"] if tiny else [])],
                       check=True)
        child = json.loads(out.read_text())
    clock.lap("training, deterministic vs not (child process)")
    return rows, child


def training_roundtrip(plan: Plan, device: torch.device, clock: Clock) -> list[dict]:
    """res50nodown steps with the `roundtrip` input around the SD/SDXL VAE architecture (random weights)."""
    autoencoder = parts.build_autoencoder(CONFIGS["sd-sdxl-vae"], plan.overrides)
    rows = []
    for autocast in [False, True] if device.type == "cuda" else [False]:
        rows.append(parts.training_rate(device, batch=plan.train_batch, crop=plan.train_crop, autocast=autocast,
                                        deterministic=False, seconds=plan.seconds["train"], autoencoder=autoencoder))
        clock.lap(f"training, roundtrip input (SD VAE) {rows[-1]['precision']}: "
                  f"{rows[-1]['images_per_second']:.1f} img/s")
    return rows


def deterministic_child(out: Path, tiny: bool) -> None:
    plan, device = (TINY, torch.device("cpu")) if tiny else (GPU, torch.device("cuda"))
    if tiny:
        torch.set_num_threads(1)  # see main()
    rows = [parts.training_rate(device, batch=plan.train_batch, crop=plan.train_crop, autocast=autocast,
                                deterministic=deterministic, seconds=plan.seconds["train"] * 0.75)
            for autocast in ([False, True] if device.type == "cuda" else [False]) for deterministic in (False, True)]
    out.write_text(json.dumps(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU fallback at tiny sizes (a test of the script)")
    parser.add_argument("--out", type=Path, help="folder for the JSON and RESULTS.md (default: bench/results "
                        "and bench/RESULTS.md; required with --tiny)")
    parser.add_argument("--deterministic-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.deterministic_child:
        deterministic_child(args.deterministic_child, args.tiny)
        return 0
    if args.tiny and args.out is None:
        parser.error("--tiny needs --out DIR (a tiny run never writes the committed results)")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device visible: run on a GPU machine, or --tiny --out DIR for the CPU fallback")
    plan, device = (TINY, torch.device("cpu")) if args.tiny else (GPU, torch.device("cuda"))
    if args.tiny:
        torch.set_num_threads(1)  # on a shared CPU, OpenMP threads that wait for each other slow tiny work 5x
    clock = Clock(PLANNED_S)
    result: dict[str, Any] = {"mode": "tiny-cpu" if args.tiny else "gpu", "card": card(device),
                              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="aligned-forensics-gpu-") as folder:
        work = Path(folder)
        result["conv_peak"] = parts.conv_peak(device, plan.peak_shapes, plan.seconds["peak"])
        clock.lap(f"dense bf16 conv peak: {result['conv_peak']['tflops_bf16']:.1f} TFLOP/s")
        result["architectures"] = architectures(plan, plan.sides)
        pools = {side: parts.make_images(work / f"pool-{side}", side, count) for side, count in plan.pool.items()}
        clock.lap(f"architectures counted (identical: {result['architectures']['identical']}), images written")
        result["reconstruction"], result["original_loop"] = reconstruction(
            plan, device, work, pools, result["architectures"], result["conv_peak"]["tflops_bf16"] * 1e12, clock)
        result["per_image_identity"] = identity(plan, device, work, pools)
        clock.lap(f"per-image identity across batch sizes: {result['per_image_identity']['per_image_identical']}")
        result["training"], result["training_deterministic"] = training(plan, device, args.tiny, clock)
        result["training_roundtrip"] = training_roundtrip(plan, device, clock)
        result["scoring"] = scoring(plan, device, work, clock)
    result["seconds"] = {"planned": PLANNED_S, "spent": clock.spent()}
    slug = re.sub(r"[^a-z0-9]+", "-", result["card"]["name"].lower()).strip("-") + ("-tiny" if args.tiny else "")
    json_path = (args.out or ROOT / "bench" / "results") / f"gpu-{slug}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(json_path, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    results_md = args.out / "RESULTS.md" if args.out else ROOT / "bench" / "RESULTS.md"
    old = results_md.read_text() if results_md.is_file() else ""
    shown = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    atomic_write_bytes(results_md, replace_block(old, slug, markdown(result, str(shown))).encode())
    print(f"wrote {json_path} and the '{slug}' block of {results_md} in {clock.spent():.0f} s")
    return 0 if all(math.isfinite(row["images_per_second"]) for row in result["reconstruction"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
