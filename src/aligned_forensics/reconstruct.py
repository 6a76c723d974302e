"""The reconstruct stage: every real image through the autoencoder, saved as a lossless PNG twin."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from aligned_forensics.autoencoders import load_autoencoder
from aligned_forensics.devices import pick_device
from aligned_forensics.errors import DataError
from aligned_forensics.images import decode_expected, encode_png, psnr
from aligned_forensics.io import atomic_directory, atomic_write_bytes, read_csv, write_csv
from aligned_forensics.params import require
from aligned_forensics.prefetch import prefetch_map
from aligned_forensics.progress import progress_bar

log = logging.getLogger(__name__)

REJECT_COLUMNS = ("path", "stage", "reason")


@dataclass(frozen=True)
class ReconstructConfig:
    """params.yaml `reconstruct`."""

    seed: int = 42  # posterior noise: image i gets a generator seeded from (seed, stem) alone
    sample: Literal["sample", "mode"] = "sample"  # posterior sample (the paper) or its mode
    batch_size: int = 16  # images per forward pass; batches only hold images of one size
    device: Literal["auto", "cpu", "cuda"] = "auto"
    io_threads: int = 2  # decoding and PNG encoding run beside the model

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "reconstruct.batch_size", "an integer >= 1", self.batch_size)
        require(self.io_threads >= 1, "reconstruct.io_threads", "an integer >= 1", self.io_threads)


def image_seed(seed: int, stem: str) -> int:
    """A 63-bit seed that depends only on (seed, stem): never on batch, order or device."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def bucket_by_shape(rows: Sequence[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Group rows into batches of identical (height, width), in a deterministic order."""
    buckets: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["stem"]):
        buckets[(int(row["height"]), int(row["width"]))].append(row)
    return [bucket[i:i + batch_size] for _, bucket in sorted(buckets.items())
            for i in range(0, len(bucket), batch_size)]


@torch.inference_mode()
def reconstruct_batch(
    autoencoder: torch.nn.Module, pixels: torch.Tensor, *, seeds: Sequence[int], sample: str
) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, H, W) uint8 through encode, posterior sample or mode, decode."""
    height, width = pixels.shape[-2:]
    dtype = next(autoencoder.parameters()).dtype
    x = pixels.to(dtype=dtype).div(127.5).sub(1.0)  # [0, 255] -> [-1, 1], the diffusers convention
    pad_bottom, pad_right = -height % 8, -width % 8  # the encoder floors odd sizes; reflect-pad, crop back
    if pad_bottom or pad_right:
        x = F.pad(x, (0, pad_right, 0, pad_bottom), mode="reflect")
    encoded = autoencoder.encode(x)
    if hasattr(encoded, "latent_dist"):
        posterior = encoded.latent_dist
        latents = posterior.mean
        if sample == "sample":
            noise = torch.stack([torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(s))
                                 for s in seeds]).to(latents.device, latents.dtype)
            latents = posterior.mean + posterior.std * noise
    else:  # AutoencoderTiny, VQModel: deterministic latents
        latents = encoded.latents
    decoded = autoencoder.decode(latents).sample[..., :height, :width]
    # [-1, 1] -> uint8 with rounding (the original truncated, biasing every pixel down by half a level)
    return decoded.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def run_reconstruct(
    config: ReconstructConfig, *, index_path: Path, autoencoder_dir: Path, out_dir: Path, rejects_path: Path
) -> dict[str, Any]:
    """Reconstruct every real listed in the fetch index into out_dir/<split>/<stem>.png."""
    rows = read_csv(index_path)
    if not rows:
        raise DataError(f"{index_path} lists no real images; run `dvc repro fetch`")
    device = pick_device(config.device)
    autoencoder, info = load_autoencoder(autoencoder_dir, device=device)
    if not info["trained"]:
        log.warning("the autoencoder is UNTRAINED (autoencoder.kind=random): its reconstructions are not "
                    "meaningful fakes; this is the offline demo. Set autoencoder.kind=hub for a real run")
    batches = bucket_by_shape(rows, config.batch_size)
    rejects: list[dict[str, str]] = []
    scores: list[float] = []
    started = time.perf_counter()
    with atomic_directory(out_dir) as staging, ThreadPoolExecutor(config.io_threads) as pool, \
            progress_bar(total=len(rows), desc="reconstruct", unit="img") as progress:
        writes: deque[Future[None]] = deque()
        for batch, reals, attempted in _prefetch(pool, batches, rejects):
            if not batch:
                progress.update(attempted)
                continue
            seeds = [image_seed(config.seed, row["stem"]) for row in batch]
            fakes = reconstruct_batch(autoencoder, torch.from_numpy(np.stack(reals)).permute(0, 3, 1, 2).to(device),
                                      seeds=seeds, sample=config.sample).permute(0, 2, 3, 1).numpy()
            for row, real, fake in zip(batch, reals, fakes, strict=True):
                scores.append(psnr(real, fake))
                writes.append(pool.submit(_write_png, staging / row["split"] / f"{row['stem']}.png", fake))
            while len(writes) > 4 * config.batch_size:  # bound the images waiting for PNG encoding
                writes.popleft().result()
            progress.update(attempted)
        for write in writes:
            write.result()
    seconds = time.perf_counter() - started
    write_csv(rejects_path, rejects, REJECT_COLUMNS)
    if not scores:
        raise DataError(f"no image could be reconstructed; see {rejects_path}")
    return {"images": len(scores), "rejected": len(rejects), "psnr_mean": float(np.mean(scores)),
            "psnr_min": float(np.min(scores)), "seconds": seconds, "images_per_second": len(scores) / seconds,
            "autoencoder": info["label"], "autoencoder_class": info["class"],
            "autoencoder_revision": info["revision"], "dtype": info["config"]["dtype"], "device": str(device)}


def _write_png(path: Path, pixels: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(pixels))


def _prefetch(
    pool: ThreadPoolExecutor, batches: list[list[dict[str, Any]]], rejects: list[dict[str, str]]
) -> Iterator[tuple[list[dict[str, Any]], list[np.ndarray], int]]:
    """Yield (rows, decoded pixels, rows attempted) per batch, decoding ahead while the model runs."""
    def decode(batch: list[dict[str, Any]]) -> list[tuple[np.ndarray | None, str]]:
        return [decode_expected(Path(row["path"]), height=int(row["height"]), width=int(row["width"]))
                for row in batch]

    for batch, decoded in zip(batches, prefetch_map(pool, decode, batches), strict=True):
        kept_rows, kept_pixels = [], []
        for row, (pixels, reason) in zip(batch, decoded, strict=True):
            if pixels is None:
                rejects.append({"path": row["path"], "stage": "reconstruct", "reason": reason})
            else:
                kept_rows.append(row)
                kept_pixels.append(pixels)
        yield kept_rows, kept_pixels, len(batch)
