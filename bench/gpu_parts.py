"""The measurements of bench/gpu.py: conv peak, reconstruction (ours and the original's loop), training, scoring.

Every measurement first runs once small (warm-up: lazy CUDA init, kernel selection), estimates its rate from that,
then sizes its timed run to its time budget."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import cv2
import diffusers
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import ToPILImage, ToTensor

from aligned_forensics.autoencoder import reconstruct
from aligned_forensics.common.images import encode_jpeg
from aligned_forensics.common.io import write_csv
from aligned_forensics.detector.models import create_detector
from aligned_forensics.evaluation.scoring import ScoreItem, score_images
from aligned_forensics.training import determinism
from aligned_forensics.training import train as training

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - started


def conv_peak(device: torch.device, shapes: list[tuple[int, int, int]], seconds: float) -> dict[str, Any]:
    """Dense bf16 3x3 convolution throughput, channels_last, best kernel (cudnn.benchmark), max over shapes."""
    rows, benchmark = [], torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        for batch, channels, side in shapes:
            x = torch.randn(batch, channels, side, side, device=device, dtype=torch.bfloat16)
            x = x.contiguous(memory_format=torch.channels_last)
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            conv = conv.to(device=device, dtype=torch.bfloat16, memory_format=torch.channels_last)
            flops = 2 * batch * side * side * channels * channels * 9
            conv(x)
            calls = max(3, math.ceil(seconds / len(shapes) / timed(lambda c=conv, i=x: c(i), device)))
            elapsed = timed(lambda c=conv, i=x, n=calls: _repeat(c, i, n), device)
            rows.append({"batch": batch, "channels": channels, "side": side, "calls": calls,
                         "tflops": flops * calls / elapsed / 1e12})
    torch.backends.cudnn.benchmark = benchmark
    return {"tflops_bf16": max(row["tflops"] for row in rows), "shapes": rows}


def _repeat(conv: torch.nn.Module, x: torch.Tensor, calls: int) -> None:
    for _ in range(calls):  # each output is dropped at once: holding them would fill the card
        conv(x)


def build_autoencoder(config_path: Path, overrides: dict[str, Any]) -> torch.nn.Module:
    """A seeded random-weight AutoencoderKL from a committed config (weights do not change the cost)."""
    torch.manual_seed(0)
    return diffusers.AutoencoderKL.from_config(json.loads(config_path.read_text()) | overrides).eval()


def roundtrip_flops(config_path: Path, overrides: dict[str, Any], side: int) -> int:
    """FLOPs of one encode + decode of a side x side image (counted on the meta device: nothing is computed)."""
    with torch.device("meta"):
        model = diffusers.AutoencoderKL.from_config(json.loads(config_path.read_text()) | overrides)
        with FlopCounterMode(display=False) as counter:
            model.decode(model.encode(torch.zeros(1, 3, side, side)).latent_dist.mean)
    return int(counter.get_total_flops())


def make_images(folder: Path, side: int, count: int, *, height: int | None = None) -> list[Path]:
    """`count` JPEGs (q90) of smooth random colour fields, side x side (or height x side)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(side)
    height = height or side
    paths = []
    for index in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 8), max(2, side // 8), 3), dtype=np.uint8)
        pixels = cv2.resize(coarse, (side, height), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{height}x{side}-{index:05d}.jpg"
        path.write_bytes(encode_jpeg(pixels, quality=90))
        paths.append(path)
    return paths


def _index(folder: Path, paths: list[Path]) -> Path:
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append({"stem": path.stem, "split": "train", "path": str(path), "width": image.width,
                         "height": image.height})
    index = folder / f"index-{len(paths)}-{paths[0].stem}.csv"
    write_csv(index, rows, ("stem", "split", "path", "width", "height"))
    return index


class SplitCounter(logging.Handler):
    """Counts reconstruct's "out of memory ... splitting it" warnings (a batch too large for the card)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.splits = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.splits += "splitting it" in record.getMessage()


def ours(model: torch.nn.Module, paths: list[Path], work: Path, *, device: torch.device, dtype: str, batch: int,
         io_threads: int, forward: str = "auto") -> tuple[float, Path, int]:
    """run_reconstruct over `paths` (buckets, prefetch, async PNG writes); (seconds, output folder, OOM splits)."""
    out = work / f"ours-{dtype}-{batch}-{forward}"
    shutil.rmtree(out, ignore_errors=True)  # never resume: every fake is made in the timed run
    (empty := work / "autoencoder").mkdir(parents=True, exist_ok=True)  # the recipe hashes its (no) files
    info = {"trained": True, "label": "bench", "class": type(model).__name__, "revision": None,
            "config": {"dtype": {"fp32": "float32", "bf16": "bfloat16"}[dtype]}}
    config = reconstruct.ReconstructConfig(device=device.type, batch_size=batch, io_threads=io_threads,
                                           forward=forward)
    counter, index = SplitCounter(), _index(work, paths)
    logging.getLogger("aligned_forensics.common.devices").addHandler(counter)
    try:
        with patch.object(reconstruct, "load_autoencoder", lambda _folder, device: (model, info)):
            seconds = timed(lambda: reconstruct.run_reconstruct(config, index_path=index, autoencoder_dir=empty,
                                                                out_dir=out, rejects_path=None, device=device),
                            device)
    finally:
        logging.getLogger("aligned_forensics.common.devices").removeHandler(counter)
    return seconds, out / "train", counter.splits


def _load_batch(paths: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The original dataset: PIL open, RGB, ToTensor, default collate (runs in the DataLoader workers)."""
    return torch.stack([ToTensor()(Image.open(p).convert("RGB")) for p in paths]), paths


def original_loop(model: torch.nn.Module, paths: list[Path], out: Path, *, device: torch.device,
                  batch: int = 64) -> float:
    """The original's loop: equal-size batches of 64, encode, posterior sample, decode, synchronous PIL saves."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model.to(memory_format=torch.contiguous_format)  # ours left it channels_last; the original never did that

    def run() -> None:
        loader = DataLoader([str(p) for p in paths], batch_size=batch, num_workers=2, collate_fn=_load_batch)
        with torch.no_grad():
            for x, names in loader:
                latents = model.encode(x.to(device) * 2 - 1).latent_dist.sample()
                images = ((model.decode(latents).sample + 1) / 2).clamp(0, 1).cpu()
                for image, name in zip(images, names, strict=True):
                    ToPILImage()(image).save(out / f"{Path(name).stem}.png")

    return timed(run, device)


def sized(rate: float, seconds: float, *, step: int, least: int, most: int) -> int:
    """How many items (a multiple of `step`, within [least, most]) fill `seconds` at `rate` items/s."""
    return int(min(most, max(least, math.ceil(rate * seconds / step) * step)))


class NoSampler:
    """_train_one_epoch sets the sampler's epoch; synthetic batches have none."""

    def set_epoch(self, epoch: int) -> None:
        pass


def training_rate(device: torch.device, *, batch: int, crop: int, autocast: bool, deterministic: bool,
                  seconds: float, autoencoder: torch.nn.Module | None = None) -> dict[str, Any]:
    """res50nodown optimiser steps through the train stage's own _train_one_epoch, on synthetic batches.

    With `autoencoder`, the detector takes the `roundtrip` input (two round trips through it in every step, as
    with filter_once: false)."""
    determinism.set_deterministic(deterministic)
    model = create_detector("res50nodown", pretrained="none", seed=0, input_filter="roundtrip" if autoencoder else
                            "none", autoencoder=autoencoder).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, crop, crop, device=device)
    labels = torch.arange(batch, device=device) % 2

    def steps(count: int) -> None:
        training._train_one_epoch(model, [(images, labels)] * count, NoSampler(), optimizer, 1, device,
                                  torch.channels_last, autocast=autocast, train_mode=training._train_mode,
                                  after_step=training._no_projection)

    steps(2)  # warm-up
    count = sized(1 / timed(lambda: steps(2), device) * 2, seconds, step=1, least=3, most=2000)
    elapsed = timed(lambda: steps(count), device)
    determinism.set_deterministic(False)
    return {"precision": "bf16 autocast" if autocast else "fp32", "deterministic": deterministic, "batch": batch,
            "input_filter": "roundtrip" if autoencoder else "none", "crop": crop, "steps": count,
            "step_ms": 1000 * elapsed / count,
            "images_per_second": count * batch / elapsed}


def scoring_rate(device: torch.device, items: list[ScoreItem], *, batch: int, seconds: float) -> dict[str, Any]:
    """res50nodown full-image scoring (the paper's protocol) through score_images, same-size batches."""
    model = create_detector("res50nodown", pretrained="none", seed=0).to(device).eval()

    def score(chosen: list[ScoreItem]) -> None:
        score_images(model, chosen, protocol="full", crop_size=0, batch_size=batch, device=device,
                     stage="evaluate:bench")

    score(items[:batch])  # warm-up
    rate = len(items) / timed(lambda: score(items), device)
    repeats = sized(rate / len(items), seconds, step=1, least=1, most=50)
    elapsed = timed(lambda: score(items * repeats), device)
    return {"batch": batch, "images": len(items) * repeats, "images_per_second": len(items) * repeats / elapsed}
