"""The reconstruct stage: every real image through the autoencoder, saved as a same-name twin.

format png (the paper): every fake is a lossless PNG. format match: the fake of a JPEG real is a JPEG (<stem>.jpg)
with exactly the real's quantization tables and chroma subsampling, so a detector cannot tell the two apart by their
file format; the fake of any other real stays a lossless PNG.

Resumable: each fake carries the sha256 of its real and a digest of the recipe (autoencoder weights and the params
that change its bytes), in PNG text chunks or a JPEG comment. A rerun keeps every fake whose real and recipe still
match, redoes the rest and deletes fakes that are no longer wanted. Files are written to a temp name and renamed.
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
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from aligned_forensics.autoencoder.autoencoder import load_autoencoder
from aligned_forensics.autoencoder.roundtrip import roundtrip
from aligned_forensics.common.compression import JpegCompression, encode_like, read_compression
from aligned_forensics.common.devices import pick_device, split_on_oom
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.figures import pick_pairs
from aligned_forensics.common.images import ImageDecodeError, decode_rgb, encode_png, open_image, png_text, psnr
from aligned_forensics.common.io import atomic_write_bytes, read_csv, write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.prefetch import prefetch_map
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.stems import shared_stems, shared_stems_message

log = logging.getLogger(__name__)

REJECT_COLUMNS = ("path", "stage", "reason")
SOURCE_KEY, RECIPE_KEY = "aligned-forensics:real-sha256", "aligned-forensics:recipe"
FAKE_SUFFIXES = (".png", ".jpg")  # lossless, or a JPEG like its real (format match)


@dataclass(frozen=True)
class ReconstructConfig:
    """params.yaml `reconstruct`."""

    seed: int = 42  # posterior noise: image i gets a generator seeded from (seed, stem) alone
    sample: Literal["sample", "mode"] = "sample"  # posterior sample (the paper) or its mode
    batch_size: int = 16  # images per batch; batches only hold images of one size
    forward: Literal["auto", "per_image", "batched"] = "auto"  # auto: per_image on CPU, batched on GPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    io_threads: int = 2  # decoding and PNG encoding run beside the model
    format: Literal["png", "match"] = "png"  # png: every fake lossless (the paper) | match: a JPEG real's is a JPEG

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
    recipe = {"seed": config.seed, "sample": config.sample, "grouping": grouping, "device": device.type}
    if config.format != "png":  # png fakes keep the digest, so the bytes, they had before `format` existed
        recipe["format"] = config.format
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:32]


class Target(NamedTuple):
    """Where one fake goes and how it is encoded."""

    path: Path  # out_dir/<split>/<stem>.png or .jpg
    compression: JpegCompression | None  # the real's JPEG compression to copy; None: lossless PNG


class Loaded(NamedTuple):
    """One real read for reconstruction."""

    pixels: np.ndarray | None  # (H, W, 3) uint8; None when rejected
    source: str  # the real's sha256
    reason: str  # why it was rejected
    done_score: float | None  # PSNR of an up-to-date fake already on disk
    target: Target | None


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
    targets: dict[str, Target] = {}
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with ThreadPoolExecutor(config.io_threads) as pool, progress_bar(
            total=sum(map(len, batches)), desc=f"reconstruct {shard.rank + 1}/{shard.world}", unit="img") as bar:
        writes: deque[tuple[str, Future[float]]] = deque()
        loads = prefetch_map(pool, lambda b: [_load(r, out_dir, recipe, fake_format=config.format) for r in b], batches)
        for batch, loaded in zip(batches, loads, strict=True):
            todo = []
            for row, (pixels, source, reason, done_score, target) in zip(batch, loaded, strict=True):
                if pixels is None:
                    rejects.append({"path": row["path"], "stage": "reconstruct", "reason": reason})
                    continue
                targets[row["stem"]] = target
                if done_score is not None:
                    scores[row["stem"]] = done_score
                    counts["resumed"] += 1
                else:
                    todo.append((row, pixels, source))
            if todo:
                reals = torch.from_numpy(np.stack([pixels for _, pixels, _ in todo])).permute(0, 3, 1, 2)  # (N,3,H,W)
                fakes = reconstruct_batch(autoencoder, reals.to(device), per_image=per_image, sample=config.sample,
                                          seeds=[image_seed(config.seed, row["stem"]) for row, _, _ in todo])
                for (row, real, source), fake in zip(todo, fakes.permute(0, 2, 3, 1).numpy(), strict=True):
                    text = {SOURCE_KEY: source, RECIPE_KEY: recipe}
                    writes.append((row["stem"], pool.submit(_write_fake, targets[row["stem"]], real, fake, text)))
                counts["reconstructed"] += len(todo)
            while len(writes) > 4 * config.batch_size:  # bound the images waiting for encoding
                stem, write = writes.popleft()
                scores[stem] = write.result()
            bar.update(len(batch))
        for stem, write in writes:
            scores[stem] = write.result()
    seconds = time.perf_counter() - started
    if rejects_path is not None:
        write_csv(rejects_path, sorted(rejects, key=lambda r: r["path"]), REJECT_COLUMNS)
        _remove_stale(out_dir, {targets[stem].path for stem in scores})
    if not scores:
        raise DataError(f"no image could be reconstructed; see {rejects_path}")
    values = [scores[stem] for stem in sorted(scores)]
    formats = Counter("png" if targets[stem].compression is None else "jpeg" for stem in scores)
    return {"images": len(values), "rejected": len(rejects), "reconstructed_now": counts["reconstructed"],
            "resumed": counts["resumed"], "psnr_mean": float(np.mean(values)), "psnr_min": float(np.min(values)),
            "format": config.format, "fake_formats": dict(sorted(formats.items())),
            "seconds": seconds, "images_per_second": counts["reconstructed"] / seconds if seconds else 0.0,
            "autoencoder": info["label"], "autoencoder_class": info["class"],
            "autoencoder_revision": info["revision"], "dtype": info["config"]["dtype"], "device": str(device),
            "forward": "per_image" if per_image else "batched", "recipe": recipe}


def reconstructed_pairs(index_path: Path, out_dir: Path, *, count: int) -> list[tuple[str, Path, Path]]:
    """(stem, real, fake) for `count` reconstructed images spread over the sorted stems (for pictures)."""
    fakes = {row["stem"]: (row, fake) for row in read_csv(index_path) if (fake := _find_fake(out_dir, row))}
    return [(stem, Path(fakes[stem][0]["path"]), fakes[stem][1]) for stem in pick_pairs(fakes, count)]


def _find_fake(out_dir: Path, row: dict[str, Any]) -> Path | None:
    """The fake of this row on disk, whichever suffix it has."""
    return next((path for suffix in FAKE_SUFFIXES if (path := out_dir / row["split"] / f"{row['stem']}{suffix}")
                 .is_file()), None)


def fake_text(path: Path) -> dict[str, str]:
    """The real's sha256 and the recipe a fake carries: PNG text chunks or a JPEG's JSON comment ({} if none)."""
    if path.suffix == ".png":
        return png_text(path)
    try:
        with open_image(path) as image:
            text = json.loads(image.info.get("comment", b"{}"))
    except (ImageDecodeError, ValueError):  # unreadable, or not our comment
        return {}
    return text if isinstance(text, dict) else {}


def _load(row: dict[str, Any], out_dir: Path, recipe: str, *, fake_format: str) -> Loaded:
    """The real's pixels and sha256, where its fake goes, and the PSNR of an up-to-date fake already there."""
    try:
        data = Path(row["path"]).read_bytes()
        pixels = decode_rgb(data)
        compression = read_compression(data) if fake_format == "match" else None
    except (OSError, ImageDecodeError) as error:
        return Loaded(None, "", str(error), None, None)
    if pixels.shape[:2] != (int(row["height"]), int(row["width"])):
        return Loaded(None, "", (f"decoded size {pixels.shape[1]}x{pixels.shape[0]} differs from the recorded "
                                 f"{row['width']}x{row['height']}"), None, None)
    source = hashlib.sha256(data).hexdigest()
    suffix = ".png" if compression is None else ".jpg"
    target = Target(out_dir / row["split"] / f"{row['stem']}{suffix}", compression)
    if target.path.is_file() and fake_text(target.path) == {SOURCE_KEY: source, RECIPE_KEY: recipe}:
        try:
            return Loaded(pixels, source, "", psnr(pixels, decode_rgb(target.path)), target)
        except ImageDecodeError:
            pass  # unreadable: make it again
    return Loaded(pixels, source, "", None, target)


def _write_fake(target: Target, real: np.ndarray, fake: np.ndarray, text: dict[str, str]) -> float:
    """Write one fake (atomically); return its PSNR against the real, measured on the fake as written."""
    if target.compression is None:
        atomic_write_bytes(target.path, encode_png(fake, text=text))
        return psnr(real, fake)  # lossless: the file decodes to these pixels
    data = encode_like(fake, target.compression, comment=json.dumps(text, sort_keys=True).encode())
    atomic_write_bytes(target.path, data)
    return psnr(real, decode_rgb(data))


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
