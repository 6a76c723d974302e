"""The reconstruct stage: every real image through the autoencoder, saved as a lossless PNG twin.

Resumable: each fake PNG carries the sha256 of its real and a digest of the recipe (autoencoder weights and
the params that change pixels) in text chunks. A rerun keeps every fake whose real and recipe still match,
redoes the rest and deletes fakes that are no longer wanted. Files are written to a temp name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from aligned_forensics.autoencoder.autoencoder import load_autoencoder
from aligned_forensics.autoencoder.roundtrip import roundtrip
from aligned_forensics.common.devices import pick_device, split_on_oom
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.figures import pick_pairs
from aligned_forensics.common.images import ImageDecodeError, decode_rgb, encode_png, png_text, psnr
from aligned_forensics.common.io import atomic_write_bytes, read_csv, write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.prefetch import prefetch_map
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.stems import shared_stems, shared_stems_message

log = logging.getLogger(__name__)

REJECT_COLUMNS = ("path", "stage", "reason")
SOURCE_KEY, RECIPE_KEY = "aligned-forensics:real-sha256", "aligned-forensics:recipe"


@dataclass(frozen=True)
class ReconstructConfig:
    """params.yaml `reconstruct`."""

    seed: int = 42  # posterior noise: image i gets a generator seeded from (seed, stem) alone
    sample: Literal["sample", "mode"] = "sample"  # posterior sample (the paper) or its mode
    batch_size: int = 16  # images per batch; batches only hold images of one size
    forward: Literal["auto", "per_image", "batched"] = "auto"  # auto: per_image on CPU, batched on GPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    io_threads: int = 2  # decoding and PNG encoding run beside the model

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "reconstruct.batch_size", "an integer >= 1", self.batch_size)
        require(self.io_threads >= 1, "reconstruct.io_threads", "an integer >= 1", self.io_threads)


@dataclass(frozen=True)
class Shard:
    """This process's share of the batches: batch i belongs to rank i % world (torchrun sets both)."""

    rank: int = 0
    world: int = 1


def image_seed(seed: int, stem: str) -> int:
    """A 63-bit seed that depends only on (seed, stem): never on batch, order, shard or device."""
    digest = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def bucket_by_shape(rows: Sequence[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Group rows into batches of identical (height, width), in a deterministic order."""
    buckets: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["stem"]):
        buckets[(int(row["height"]), int(row["width"]))].append(row)
    return [bucket[i:i + batch_size] for _, bucket in sorted(buckets.items())
            for i in range(0, len(bucket), batch_size)]


def reconstruct_batch(autoencoder: torch.nn.Module, pixels: torch.Tensor, *, seeds: Sequence[int], sample: str,
                      per_image: bool = False) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, H, W) uint8. per_image runs the model on one image at a time, which
    makes every output independent of the batch size (batched kernels may round differently)."""
    if per_image:
        return torch.cat([roundtrip(autoencoder, pixels[i:i + 1], seeds=seeds[i:i + 1], sample=sample)
                          for i in range(len(seeds))])
    height, width = pixels.shape[-2:]
    return split_on_oom(lambda start, stop: roundtrip(autoencoder, pixels[start:stop], seeds=seeds[start:stop],
                                                      sample=sample),
                        len(seeds), what=f"one {width}x{height} image", param="reconstruct.batch_size")


def recipe_digest(config: ReconstructConfig, autoencoder_dir: Path, *, per_image: bool, device: torch.device) -> str:
    """Digest of everything that changes a fake's pixels besides its real (not batch size when per_image)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(autoencoder_dir).rglob("*") if p.is_file()):
        name = path.relative_to(autoencoder_dir).as_posix().encode()
        digest.update(name + hashlib.sha256(path.read_bytes()).digest())
    grouping = "per_image" if per_image else f"batched:{config.batch_size}"
    digest.update(json.dumps({"seed": config.seed, "sample": config.sample, "grouping": grouping,
                              "device": device.type}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def run_reconstruct(config: ReconstructConfig, *, index_path: Path, autoencoder_dir: Path, out_dir: Path,
                    rejects_path: Path | None, shard: Shard = Shard(), device: torch.device | None = None
                    ) -> dict[str, Any]:
    """Reconstruct this shard's reals into out_dir/<split>/<stem>.png, keeping fakes that are already done.

    With rejects_path (the single or final pass) also list rejects and delete fakes no longer wanted."""
    rows = read_csv(index_path)
    if not rows:
        raise DataError(f"{index_path} lists no real images; run `dvc repro fetch`")
    _check_unique_stems(rows)
    device = device or pick_device(config.device)
    autoencoder, info = load_autoencoder(autoencoder_dir, device=device)
    autoencoder = autoencoder.to(memory_format=torch.channels_last)
    if not info["trained"]:
        log.warning("the autoencoder is UNTRAINED (autoencoder.kind=random): its reconstructions are not "
                    "meaningful fakes; this is the offline demo. Set autoencoder.kind=hub for a real run")
    per_image = config.forward == "per_image" or (config.forward == "auto" and device.type == "cpu")
    recipe = recipe_digest(config, autoencoder_dir, per_image=per_image, device=device)
    batches = bucket_by_shape(rows, config.batch_size)[shard.rank::shard.world]
    rejects: list[dict[str, str]] = []
    scores: dict[str, float] = {}
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with ThreadPoolExecutor(config.io_threads) as pool, progress_bar(
            total=sum(map(len, batches)), desc=f"reconstruct {shard.rank + 1}/{shard.world}", unit="img") as bar:
        writes: deque[Future[None]] = deque()
        for batch, loaded in zip(batches, prefetch_map(pool, lambda b: [_load(r, out_dir, recipe) for r in b],
                                                       batches), strict=True):
            todo = []
            for row, (pixels, source, reason, done_score) in zip(batch, loaded, strict=True):
                if pixels is None:
                    rejects.append({"path": row["path"], "stage": "reconstruct", "reason": reason})
                elif done_score is not None:
                    scores[row["stem"]] = done_score
                    counts["resumed"] += 1
                else:
                    todo.append((row, pixels, source))
            if todo:
                reals = torch.from_numpy(np.stack([pixels for _, pixels, _ in todo])).permute(0, 3, 1, 2)  # (N,3,H,W)
                fakes = reconstruct_batch(autoencoder, reals.to(device), per_image=per_image, sample=config.sample,
                                          seeds=[image_seed(config.seed, row["stem"]) for row, _, _ in todo])
                for (row, real, source), fake in zip(todo, fakes.permute(0, 2, 3, 1).numpy(), strict=True):
                    scores[row["stem"]] = psnr(real, fake)
                    text = {SOURCE_KEY: source, RECIPE_KEY: recipe}
                    writes.append(pool.submit(_write_png, _fake_path(out_dir, row), fake, text))
                counts["reconstructed"] += len(todo)
            while len(writes) > 4 * config.batch_size:  # bound the images waiting for PNG encoding
                writes.popleft().result()
            bar.update(len(batch))
        for write in writes:
            write.result()
    seconds = time.perf_counter() - started
    if rejects_path is not None:
        write_csv(rejects_path, sorted(rejects, key=lambda r: r["path"]), REJECT_COLUMNS)
        _remove_stale(out_dir, {_fake_path(out_dir, row) for row in rows if row["stem"] in scores})
    if not scores:
        raise DataError(f"no image could be reconstructed; see {rejects_path}")
    values = [scores[stem] for stem in sorted(scores)]
    return {"images": len(values), "rejected": len(rejects), "reconstructed_now": counts["reconstructed"],
            "resumed": counts["resumed"], "psnr_mean": float(np.mean(values)), "psnr_min": float(np.min(values)),
            "seconds": seconds, "images_per_second": counts["reconstructed"] / seconds if seconds else 0.0,
            "autoencoder": info["label"], "autoencoder_class": info["class"],
            "autoencoder_revision": info["revision"], "dtype": info["config"]["dtype"], "device": str(device),
            "forward": "per_image" if per_image else "batched", "recipe": recipe}


def reconstructed_pairs(index_path: Path, out_dir: Path, *, count: int) -> list[tuple[str, Path, Path]]:
    """(stem, real, fake) for `count` reconstructed images spread over the sorted stems (for pictures)."""
    rows = {row["stem"]: row for row in read_csv(index_path) if _fake_path(out_dir, row).is_file()}
    return [(stem, Path(rows[stem]["path"]), _fake_path(out_dir, rows[stem])) for stem in pick_pairs(rows, count)]


def _fake_path(out_dir: Path, row: dict[str, Any]) -> Path:
    return out_dir / row["split"] / f"{row['stem']}.png"


def _load(row: dict[str, Any], out_dir: Path, recipe: str) -> tuple[np.ndarray | None, str, str, float | None]:
    """(real pixels, real sha256, reason to reject, PSNR if an up-to-date fake already exists)."""
    try:
        data = Path(row["path"]).read_bytes()
        pixels = decode_rgb(data)
    except (OSError, ImageDecodeError) as error:
        return None, "", str(error), None
    if pixels.shape[:2] != (int(row["height"]), int(row["width"])):
        return None, "", (f"decoded size {pixels.shape[1]}x{pixels.shape[0]} differs from the recorded "
                          f"{row['width']}x{row['height']}"), None
    source = hashlib.sha256(data).hexdigest()
    fake = _fake_path(out_dir, row)
    if fake.is_file() and png_text(fake) == {SOURCE_KEY: source, RECIPE_KEY: recipe}:
        try:
            return pixels, source, "", psnr(pixels, decode_rgb(fake))
        except ImageDecodeError:
            pass  # unreadable: make it again
    return pixels, source, "", None


def _write_png(path: Path, pixels: np.ndarray, text: dict[str, str]) -> None:
    atomic_write_bytes(path, encode_png(pixels, text=text))


def _remove_stale(out_dir: Path, wanted: set[Path]) -> None:
    """Delete fakes (and temp files of killed runs) that the current index does not ask for."""
    stale = [p for p in out_dir.rglob("*") if p.is_file() and p not in wanted] if out_dir.is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d stale file(s) from %s", len(stale), out_dir)


def _check_unique_stems(rows: Sequence[dict[str, Any]]) -> None:
    """Every stem shared by reals in the index, in one error: their fakes would overwrite each other."""
    shared = shared_stems((row["stem"], row["path"]) for row in rows)
    if shared:
        raise DataError(shared_stems_message(shared, fix=(
            "Their fakes would overwrite each other. The fetch stage refuses such an index, so rerun "
            "`dvc repro fetch` (after renaming or removing one source file of each pair in a folder source, or "
            "giving one of two sources another `prefix`) instead of editing the index by hand.")))
