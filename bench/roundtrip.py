"""What the `roundtrip` input filter costs: scoring, a training step with and without filter_once, the paper's detector.

Ratios against a baseline measured in the same run: (a) cnn6 scoring with input_filter none vs roundtrip (the
committed TAEF2 autoencoder) and the filter's share; (b) one cnn6 training step (64 crops of 48², 32 synced
pairs) with the filter run in the step vs filter_once (the network fed precomputed maps), the one-off precompute
per 64² image through FilterCache, and the break-even number of epochs; (c) res50nodown (the paper's detector,
random init) forward with roundtrip vs none, and the same filter around a random-weight SD VAE (AutoencoderKL from
the committed SD/SDXL config: the cost does not depend on the weights). Inputs are decoded crops of the bundled
photos, already normalised (decode is not timed).

One torch thread by default: on a 2-core machine shared with other jobs, two OpenMP threads that wait for each other
made the same round trip 3-40x slower than one (bench/RESULTS.md), which no ratio survives. Usage, from the
repository root (~2 min):
    .venv/bin/python bench/roundtrip.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from aligned_forensics.autoencoder.roundtrip import roundtrip  # noqa: E402
from aligned_forensics.autoencoder.taesd import load_weight_pair  # noqa: E402
from aligned_forensics.common.images import decode_rgb, encode_png  # noqa: E402
from aligned_forensics.data.sources.samples import SAMPLE_PHOTOS, bundled_photo_path  # noqa: E402
from aligned_forensics.detector.models import create_detector, prefiltered_inputs  # noqa: E402
from aligned_forensics.detector.preprocessing import to_normalised_tensor  # noqa: E402
from aligned_forensics.detector.roundtrip_input import RoundTripEnergy  # noqa: E402
from aligned_forensics.training import train as training  # noqa: E402
from aligned_forensics.training.filter_once import FilterCache  # noqa: E402

TAEF2 = ROOT / "assets/autoencoders/taef2"
SD_VAE = ROOT / "assets/autoencoders/configs/sd-sdxl-vae.json"
REPEATS = 3
SCORE_SIDES, SCORE_BATCH = (64, 128), 16
TRAIN_PAIRS, TRAIN_CROP = 32, 48  # the demo's step: 32 synced pairs, 48² crops
PRECOMPUTE_SIDE, PRECOMPUTE_IMAGES = 64, 32  # the demo's 64² training images, one FilterCache batch
PAPER_SIDE, PAPER_BATCH = 96, 4


def interleaved(runs: dict[str, Callable[[], object]], *, repeats: int = REPEATS) -> dict[str, float]:
    """Median seconds per call of each run: one warm-up call each, then `repeats` rounds calling each in turn
    (on a shared machine, a load change then hits every run alike, not the one that happened to be timed)."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}


def crops(count: int, side: int, *, seed: int) -> np.ndarray:
    """(count, side, side, 3) uint8: seeded crops of the bundled photos, each resized from a random window."""
    rng = np.random.default_rng(seed)
    photos = [decode_rgb(bundled_photo_path(photo)) for photo in SAMPLE_PHOTOS]
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        window = int(rng.integers(side, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, extent - window + 1)) for extent in photo.shape[:2])
        patch = Image.fromarray(photo[top:top + window, left:left + window]).resize((side, side), Image.BILINEAR)
        out.append(np.asarray(patch))
    return np.stack(out)


def normalised(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, ImageNet-normalised (what a detector is fed)."""
    return torch.stack([to_normalised_tensor(image) for image in pixels])


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def network_only(model: torch.nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """The detector without its input filter, fed the filter's output (what filter_once trains and validates)."""
    with prefiltered_inputs(model):
        return model(maps)


@torch.inference_mode()
def scoring(autoencoder: torch.nn.Module) -> list[dict]:
    """(a) cnn6 forward per image, none vs roundtrip, and the network alone on the maps, per side."""
    plain = create_detector("cnn6", pretrained="none", seed=0).eval()
    filtered = create_detector("cnn6", pretrained="none", seed=0, input_filter="roundtrip",
                               autoencoder=autoencoder).eval()
    rows = []
    for side in SCORE_SIDES:
        batch = normalised(crops(SCORE_BATCH, side, seed=side))
        maps = filtered.input_filter(batch)  # (16, 6, side, side)
        seconds = interleaved({"none": lambda b=batch: plain(b), "roundtrip": lambda b=batch: filtered(b),
                               "network": lambda m=maps: network_only(filtered, m)})
        rows.append({"side": side} | {name: value / SCORE_BATCH for name, value in seconds.items()})
    return rows


def training_step(autoencoder: torch.nn.Module) -> dict:
    """(b) one optimiser step of cnn6 + roundtrip, the filter in the step vs filter_once, and the precompute."""
    model = create_detector("cnn6", pretrained="none", seed=0, input_filter="roundtrip", autoencoder=autoencoder)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    reals = crops(TRAIN_PAIRS, TRAIN_CROP, seed=1)
    fakes = roundtrip(autoencoder, torch.from_numpy(reals).permute(0, 3, 1, 2), seeds=[0] * TRAIN_PAIRS,
                      sample="mode").permute(0, 2, 3, 1).numpy()  # each real's own reconstruction (synced)
    images = normalised(np.concatenate([reals, fakes]))  # (64, 3, 48, 48)
    labels = torch.arange(2 * TRAIN_PAIRS) >= TRAIN_PAIRS
    with torch.no_grad():
        maps = model.input_filter(images)  # (64, 6, 48, 48): what filter_once's crops hold

    def step(batch: torch.Tensor) -> None:
        training._train_one_epoch(model, [(batch, labels)], _NoSampler(), optimizer, 1, torch.device("cpu"),
                                  torch.channels_last, autocast=False, train_mode=training._train_mode,
                                  after_step=training._no_projection)

    def step_on_maps() -> None:
        with prefiltered_inputs(model):
            step(maps)

    seconds = interleaved({"per_step": lambda: step(images), "once": step_on_maps}, repeats=2)
    with tempfile.TemporaryDirectory() as folder:  # the one-off precompute, as the train stage runs it (decode too)
        paths = []
        for index, image in enumerate(crops(PRECOMPUTE_IMAGES, PRECOMPUTE_SIDE, seed=2)):
            paths.append(str(Path(folder) / f"{index:03d}.png"))
            Path(paths[-1]).write_bytes(encode_png(image))
        fill = interleaved({"fill": lambda: FilterCache(model, device=torch.device("cpu")).fill(paths)}, repeats=1)
    precompute = fill["fill"] / len(paths)
    saved = (seconds["per_step"] - seconds["once"]) / (2 * TRAIN_PAIRS)  # per training image and epoch
    return seconds | {"precompute": precompute, "break_even": precompute / saved if saved > 0 else float("inf")}


class _NoSampler:
    """_train_one_epoch sets the sampler's epoch; a synthetic batch has none."""

    def set_epoch(self, epoch: int) -> None:
        pass


@torch.inference_mode()
def paper_detector(autoencoder: torch.nn.Module) -> dict:
    """(c) res50nodown forward per image, none vs roundtrip (TAEF2), and the roundtrip filter around an SD VAE."""
    batch = normalised(crops(PAPER_BATCH, PAPER_SIDE, seed=3))
    plain = create_detector("res50nodown", pretrained="none", seed=0).eval().to(memory_format=torch.channels_last)
    filtered = create_detector("res50nodown", pretrained="none", seed=0, input_filter="roundtrip",
                               autoencoder=autoencoder).eval().to(memory_format=torch.channels_last)
    maps = filtered.input_filter(batch)  # (4, 6, 96, 96)
    seconds = interleaved({"none": lambda: plain(batch), "roundtrip": lambda: filtered(batch),
                           "network": lambda: network_only(filtered, maps)}, repeats=2)
    torch.manual_seed(0)
    sd_vae = diffusers.AutoencoderKL.from_config(json.loads(SD_VAE.read_text())).eval()  # random weights
    sd_filter = RoundTripEnergy(sd_vae)
    one = batch[:1]
    sd = interleaved({"sd_filter": lambda: sd_filter(one)}, repeats=1)  # one image: two round trips
    return {name: value / PAPER_BATCH for name, value in seconds.items()} | sd | {"sd_parameters": parameters(sd_vae)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    torch.set_num_threads(parser.parse_args(argv).threads)
    started = time.perf_counter()
    autoencoder = load_weight_pair(TAEF2).eval()
    taef2_parameters = parameters(autoencoder)
    score_rows = scoring(autoencoder)
    step = training_step(autoencoder)
    paper = paper_detector(autoencoder)
    ms = 1000.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; each row the median of its repeats after "
          f"a warm-up, runs interleaved; {time.perf_counter() - started:.0f} s in all\n")
    print(f"(a) cnn6 scoring, batch {SCORE_BATCH}, TAEF2 ({taef2_parameters:,} parameters), median of {REPEATS}")
    print("| side | none ms/img | roundtrip ms/img | roundtrip / none | network on the maps ms/img | filter share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in score_rows:
        print(f"| {row['side']}² | {row['none'] * ms:.1f} | {row['roundtrip'] * ms:.1f} | "
              f"{row['roundtrip'] / row['none']:.1f}× | {row['network'] * ms:.1f} | "
              f"{1 - row['network'] / row['roundtrip']:.0%} |")
    print(f"\n(b) cnn6 + roundtrip, one training step of {2 * TRAIN_PAIRS} crops of {TRAIN_CROP}² "
          f"({TRAIN_PAIRS} synced pairs), median of 2")
    print("| filter | s/step | ratio |\n| --- | --- | --- |")
    print(f"| in every step (filter_once: false) | {step['per_step']:.2f} | {step['per_step'] / step['once']:.1f}× |")
    print(f"| filter_once (the network on precomputed maps) | {step['once']:.2f} | 1.0× |")
    print(f"one-off precompute (FilterCache over {PRECOMPUTE_IMAGES} PNGs, decode included): "
          f"{step['precompute'] * ms:.0f} ms per {PRECOMPUTE_SIDE}² image; filter_once is ahead after "
          f"{step['break_even']:.2f} epochs")
    print(f"\n(c) res50nodown forward (random init, channels_last), {PAPER_BATCH} images of {PAPER_SIDE}², median of 2")
    print("| detector | ms/img | ratio to none | filter share |\n| --- | --- | --- | --- |")
    print(f"| none | {paper['none'] * ms:.0f} | 1.0× | – |")
    print(f"| roundtrip, TAEF2 | {paper['roundtrip'] * ms:.0f} | {paper['roundtrip'] / paper['none']:.2f}× | "
          f"{1 - paper['network'] / paper['roundtrip']:.0%} |")
    sd_total = paper["network"] + paper["sd_filter"]
    print(f"| roundtrip, SD VAE (random weights): its filter on 1 image ({paper['sd_filter'] * ms:.0f} ms, one run) "
          f"+ the network on the maps ({paper['network'] * ms:.0f} ms) | {sd_total * ms:.0f} | "
          f"{sd_total / paper['none']:.1f}× | {paper['sd_filter'] / sd_total:.0%} |")
    print(f"\nthe autoencoder a checkpoint embeds (fp32): TAEF2 {taef2_parameters:,} parameters = "
          f"{taef2_parameters * 4 / 1e6:.1f} MB; SD VAE {paper['sd_parameters']:,} = "
          f"{paper['sd_parameters'] * 4 / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
