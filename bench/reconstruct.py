"""Reconstruction throughput: our reconstruct stage vs a naive loop in the style of the original, same model and images.

The naive loop follows the original reconstruction script: DataLoader(ToTensor, num_workers=2) over a folder of
equal-size JPEGs, `2x-1`, encode, latents, decode, `clamp(y/2+.5)`, ToPILImage and a synchronous PIL PNG save at
Pillow's default level. Ours is `run_reconstruct` (per-image forward on CPU, decoding and OpenCV PNG writes on two
threads). Models: an identity autoencoder (the I/O ceiling), a random-init TAESD-size TinyAutoencoder and TAEF2
(the weight pair committed in assets/autoencoders/taef2; another folder with --taef2 DIR, skipped if absent).
Inputs are JPEG q90 crops of the photos bundled with scikit-image/-learn.

Usage, from the repository root (writes under /tmp; about 9 minutes on 2 cores):
    .venv/bin/python bench/reconstruct.py
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["TQDM_DISABLE"] = "1"  # tqdm reads TQDM_* when it is imported

import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from unittest.mock import patch  # noqa: E402

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision.transforms import ToPILImage, ToTensor  # noqa: E402

from aligned_forensics.autoencoder import reconstruct  # noqa: E402
from aligned_forensics.autoencoder.roundtrip import roundtrip  # noqa: E402
from aligned_forensics.autoencoder.taesd import TinyAutoencoder, load_weight_pair  # noqa: E402
from aligned_forensics.common.images import decode_rgb  # noqa: E402
from aligned_forensics.common.io import write_csv  # noqa: E402

ROOT = Path(tempfile.gettempdir()) / "aligned-forensics-bench-reconstruct"
TAEF2 = Path(__file__).resolve().parents[1] / "assets" / "autoencoders" / "taef2"
SIZES = {"256²": (256, 256), "640×480": (640, 480)}  # (width, height)
INFO = {"trained": True, "label": "bench", "class": "bench", "revision": None, "config": {"dtype": "float32"}}
# model -> (images per size, timed repeats, naive batch): the seed's run.sh uses 64, AutoencoderTiny is faster at 8
PLAN = {"identity": ({"256²": 200, "640×480": 200}, 3, 64), "TAESD-size, random": ({"256²": 32, "640×480": 8}, 3, 8),
        "TAEF2": ({"256²": 16, "640×480": 8}, 1, 8)}
CHECKED = 4  # images whose fake is compared with a direct forward, for the non-identity models


class SeedStyle(nn.Module):
    """Diffusers-style view (encode(x in [-1, 1]).latents, decode(z).sample) of a TinyAutoencoder, or identity."""

    def __init__(self, tiny: TinyAutoencoder | None = None) -> None:
        super().__init__()
        self.tiny = tiny
        self.unused = nn.Parameter(torch.zeros(0))  # roundtrip reads the dtype from the first parameter

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latents=x if self.tiny is None else self.tiny.encoder(x / 2 + 0.5))

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=z if self.tiny is None else self.tiny.decoder(z) * 2 - 1)


def load(paths: list[str]) -> tuple[torch.Tensor, list[str]]:
    """The seed dataset's PIL open + RGB + ToTensor and default collate; runs in the DataLoader workers."""
    return torch.stack([ToTensor()(Image.open(p).convert("RGB")) for p in paths]), paths


def naive(model: nn.Module, paths: list[Path], out_dir: Path, batch: int) -> None:
    """The original's loop: equal-size batches, model on the whole batch, one synchronous PIL save per image."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for x, names in DataLoader([str(p) for p in paths], batch_size=batch, num_workers=2, collate_fn=load):
            generator = torch.Generator().manual_seed(42)  # re-created per batch; unused by deterministic latents
            encoded = model.encode(2 * x - 1)
            latents = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.sample(generator)
            y = torch.clamp(model.decode(latents).sample / 2 + 0.5, 0, 1)
            for image, name in zip(y, names, strict=True):
                ToPILImage()(image).save(out_dir / Path(name).name.replace(".jpg", ".png"))


def ours(model: nn.Module, index: Path, out_dir: Path) -> None:
    config = reconstruct.ReconstructConfig(device="cpu", batch_size=16, io_threads=2)
    (empty := out_dir.parent / "ae").mkdir(parents=True, exist_ok=True)  # the recipe hashes every file in it
    with patch.object(reconstruct, "load_autoencoder", lambda _dir, device: (model, INFO)):
        reconstruct.run_reconstruct(config, index_path=index, autoencoder_dir=empty, out_dir=out_dir,
                                    rejects_path=out_dir.parent / "rejects.csv")


def make_inputs(folder: Path, size: tuple[int, int], count: int) -> list[Path]:
    """`count` different JPEG q90 crops (random scale, position, mirror) of the bundled photos, once."""
    paths = [folder / f"{i:04d}.jpg" for i in range(count)]
    if all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              *load_sample_images().images]
    rng = np.random.default_rng(0)
    for i, path in enumerate(paths):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = max(size[0] / photo.width, size[1] / photo.height) * rng.uniform(1.0, 1.6)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
        left, top = (int(rng.integers(0, s - c + 1)) for s, c in zip(photo.size, size, strict=True))
        crop = photo.crop((left, top, left + size[0], top + size[1]))
        (crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop).save(path, "JPEG", quality=90)
    return paths


def timed(run: Callable[[], None], out_dir: Path) -> float:
    shutil.rmtree(out_dir, ignore_errors=True)
    os.sync()  # no writeback of the previous run inside this one
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def differing(fakes: list[Path], expected: list[np.ndarray]) -> tuple[int, float]:
    """(images whose PNG does not decode to the expected array, fraction of differing values)."""
    diffs = [np.asarray(Image.open(f).convert("RGB")) != e for f, e in zip(fakes, expected, strict=True)]
    return sum(bool(d.any()) for d in diffs), float(np.mean([d.mean() for d in diffs]))


def bench(name: str, model: nn.Module, size_name: str) -> str:
    """One table row: naive and ours alternately on the same images, after a warm-up of each on 2 images."""
    counts, repeats, batch = PLAN[name]
    (width, height), work = SIZES[size_name], ROOT / "work"
    paths = make_inputs(ROOT / "inputs" / f"{width}x{height}", (width, height), counts[size_name])
    shutil.rmtree(work, ignore_errors=True)
    for n in (2, len(paths)):
        rows = [{"stem": p.stem, "split": "train", "path": p, "width": width, "height": height} for p in paths[:n]]
        write_csv(work / f"index-{n}.csv", rows, ("stem", "split", "path", "width", "height"))
    seed_view = model if isinstance(model, SeedStyle) else SeedStyle(model)
    naive_dir, ours_dir = work / "naive" / "1_fake", work / "ours" / "fake"
    seconds: dict[str, list[float]] = {"naive": [], "ours": []}
    for some in [paths[:2]] + [paths] * repeats:  # the first round is the warm-up
        model.to(memory_format=torch.contiguous_format)  # ours leaves it channels_last; the seed never did that
        seconds["naive"].append(timed(lambda s=some: naive(seed_view, s, naive_dir, batch), naive_dir))
        index = work / f"index-{len(some)}.csv"
        seconds["ours"].append(timed(lambda i=index: ours(model, i, ours_dir), ours_dir))
    rates = {side: sorted(len(paths) / s for s in times[1:]) for side, times in seconds.items()}
    naive_rate, ours_rate = statistics.median(rates["naive"]), statistics.median(rates["ours"])
    reals = [decode_rgb(p) for p in paths]
    if model is seed_view:  # identity: every fake must be exactly its decoded real
        bad, _ = differing([ours_dir / "train" / f"{p.stem}.png" for p in paths], reals)
        seed_bad, seed_frac = differing([naive_dir / f"{p.stem}.png" for p in paths], reals)
        check = f"ours ≠ real: {bad}/{len(paths)}; naive ≠ real: {seed_bad}/{len(paths)} ({seed_frac:.1%} of values)"
    else:  # the fake must be exactly the model's output for that image alone
        direct = [roundtrip(model, torch.tensor(r).permute(2, 0, 1)[None], seeds=[0], sample="mode")[0]
                  .permute(1, 2, 0).numpy() for r in reals[:CHECKED]]
        bad, _ = differing([ours_dir / "train" / f"{p.stem}.png" for p in paths[:CHECKED]], direct)
        check = f"ours ≠ direct forward: {bad}/{len(direct)}"
    spread = "; ".join(f"{side} " + ", ".join(f"{r:.2f}" for r in rates[side]) for side in rates)
    return (f"| {name} | {size_name} | {len(paths)} | {naive_rate:.2f} | {ours_rate:.2f} | "
            f"**{ours_rate / naive_rate:.1f}×** | {repeats} ({spread}) | {check} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taef2", type=Path, default=TAEF2, help="folder with taef2_encoder.pth + taef2_decoder.pth")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {"identity": SeedStyle(), "TAESD-size, random": TinyAutoencoder(4, branch=False)}
    if args.taef2.is_dir():
        models["TAEF2"] = load_weight_pair(args.taef2)
    else:
        print(f"TAEF2 skipped: {args.taef2} does not exist (pass --taef2 DIR holding taef2_*.pth)", file=sys.stderr)
    print("| autoencoder | size | images | naive img/s | ours img/s | ours / naive | runs (img/s) | lossless check |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, model in models.items():
        for size_name in SIZES:
            print(bench(name, model.eval(), size_name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
