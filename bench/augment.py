"""Training throughput on this CPU: augmentation per core (ours vs a full-image pipeline) and res50nodown steps.

1. One core: 200 COCO-size 640×480 JPEG q90 crops of bundled photos, each decoded from its file, augmented with a
   draw seeded by (pass, image) and normalised to 3×96×96, by ours (window-first `apply_augmentation`) and by
   `apply_augmentation_full` (every step on the whole image) in alternating passes; again from pre-decoded arrays.
   The uint8 crops of the two must be identical.
2. Two threads: forward + BCEWithLogits + backward + Adam on 64 random 3×96×96 images, channels_last and NCHW.
The original's numbers are quoted from a measurement of the original code on this machine kind (not re-run here;
see bench/RESULTS.md). A
measurement that overlaps another bench/ script (polled) is repeated once that script has gone.

Usage, from the repository root (about 15 minutes on 2 cores; benchmark 2 needs about 16 GB of RAM):
    .venv/bin/python bench/augment.py
Prefix GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to back large mallocs with transparent huge pages (bench/RESULTS.md).
"""

from __future__ import annotations

import os

os.environ.update(TQDM_DISABLE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402
from torch import nn  # noqa: E402

from aligned_forensics.common.images import decode_rgb  # noqa: E402
from aligned_forensics.detector.models import create_detector  # noqa: E402
from aligned_forensics.detector.preprocessing import to_normalised_tensor  # noqa: E402
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation  # noqa: E402
from aligned_forensics.training.augment_ops import apply_augmentation, apply_augmentation_full  # noqa: E402

COUNT, WIDTH, HEIGHT, QUALITY, CROP, SEED, PASSES, WARMUP_IMAGES, TARGET = 200, 640, 480, 90, 96, 2026, 7, 20, 6.0
METHODS = (apply_augmentation, apply_augmentation_full)  # ours, the full-image reference
ROWS = {"decode + augment + tensor": 61.2, "augment + tensor (pre-decoded)": 62.0}  # the seed's img/s, §1.1
BATCH, WARMUP_STEPS, TIMED_STEPS, TRAIN_THREADS, WAIT_S, POLL_S = 64, 2, 5, 2, 20, 10
LAYOUTS = {"channels_last": (torch.channels_last, 32.11), "NCHW": (torch.contiguous_format, 52.02)}  # seed s/step §4
AUGMENT_HEADER = (f"| {COUNT} × {WIDTH}×{HEIGHT} JPEG q{QUALITY}, 1 core | ours img/s | full-image img/s | "
                  "ours / full | ours / seed's img/s (§1.1, not re-run) | pass range ours; full | "
                  "minor page faults/img ours; full | identical crops |\n" + "| --- " * 8 + "|")
TRAIN_HEADER = (f"| res50nodown, {BATCH} × 96², fp32, {TRAIN_THREADS} threads | s/step (median of {TIMED_STEPS}) | "
                f"img/s | step times s (first {WARMUP_STEPS} warm-up) | CPU s/step user + sys | peak RSS GiB | "
                "seed s/step (§4, not re-run) | seed / ours |\n" + "| --- " * 8 + "|")


def others() -> list[str]:
    """Other bench/ scripts running now (they share the 2 cores); this one and its launchers are skipped."""
    found = subprocess.run(["pgrep", "-af", "bench/"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "bench/augment.py" not in line]


def watch(stop: threading.Event, seen: list[str]) -> None:
    while not stop.wait(POLL_S):
        seen.extend(others())


def quietly(measure: Callable[[], tuple[str, float]]) -> tuple[str, float]:
    """measure() with no other bench/ script before, during (polled) or after it; else wait and measure again."""
    while True:
        while running := others():
            print(f"waiting for {running}", flush=True)
            time.sleep(WAIT_S)
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=watch, args=(stop, seen))
        watcher.start()
        result = measure()
        stop.set()
        watcher.join()
        if not (seen := seen + others()):
            return result
        print(f"{seen[0]} ran during a measurement: repeating it", flush=True)


def make_inputs(folder: Path) -> list[Path]:
    """COUNT different 640×480 JPEG q90 crops (random scale, position, mirror) of six bundled photos."""
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
              *load_sample_images().images]
    rng, paths = np.random.default_rng(0), []
    for i in range(COUNT):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = max(WIDTH / photo.width, HEIGHT / photo.height) * rng.uniform(1.0, 1.6)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
        left, top = int(rng.integers(0, photo.width - WIDTH + 1)), int(rng.integers(0, photo.height - HEIGHT + 1))
        crop = photo.crop((left, top, left + WIDTH, top + HEIGHT))
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop
        crop.save(path := folder / f"{i:04d}.jpg", "JPEG", quality=QUALITY)
        paths.append(path)
    return paths


def one_pass(sources: list[Path] | list[np.ndarray], method: Callable[..., np.ndarray],
             pass_index: int) -> tuple[float, float, list[np.ndarray]]:
    """(img/s, minor page faults/img, crops): decode if paths, draw, augment, normalise; draw keyed by (pass, image)."""
    config, crops, faults = AugmentConfig(crop_size=CROP), [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    for index, source in enumerate(sources):
        pixels = decode_rgb(source) if isinstance(source, Path) else source
        crops.append(method(pixels, draw_augmentation(config, np.random.default_rng([SEED, pass_index, index])),
                            crop_size=CROP))
        to_normalised_tensor(crops[-1])
    rate = len(sources) / (time.perf_counter() - started)
    return rate, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(sources), crops


def augmentation_row(label: str, sources: list[Path] | list[np.ndarray]) -> tuple[str, float]:
    """A table row and ours / full (median img/s of PASSES passes, the methods alternating so drift hits both)."""
    for method in METHODS:
        one_pass(sources[:WARMUP_IMAGES], method, PASSES + 1)  # draws unlike the timed ones
    passes = [[one_pass(sources, m, p) for m in METHODS] for p in range(PASSES)]
    for pass_index, ((*_, mine), (*_, theirs)) in enumerate(passes):
        bad = sum(not np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
        assert bad == 0, f"{label}, pass {pass_index}: {bad} crops differ between the two methods"
    rates, faults = ([[timed[i][k] for timed in passes] for i in range(len(METHODS))] for k in (0, 1))
    (ours, full), spread = map(statistics.median, rates), "; ".join(f"{min(r):.0f}–{max(r):.0f}" for r in rates)
    return (f"| {label} | {ours:.1f} ({1000 / ours:.2f} ms) | {full:.1f} ({1000 / full:.2f} ms) | "
            f"**{ours / full:.1f}×** | {ours / ROWS[label]:.1f}× (of {ROWS[label]}) | {spread} | "
            f"{'; '.join(f'{statistics.median(f):.0f}' for f in faults)} | {COUNT} × {PASSES} |", ours / full)


def train_row(layout: str) -> tuple[str, float]:
    """A table row and s/step: 2 warm-up and 5 timed Adam steps of res50nodown on BATCH random 96² images."""
    memory_format, seed_step = LAYOUTS[layout]
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, so the peak is this layout's own
    model = create_detector("res50nodown", pretrained="none", seed=0).to(memory_format=memory_format).train()
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-4), nn.BCEWithLogitsLoss()
    x = torch.randn(BATCH, 3, CROP, CROP).contiguous(memory_format=memory_format)  # create_detector seeded torch
    y = torch.cat([torch.zeros(BATCH // 2), torch.ones(BATCH - BATCH // 2)])
    times, cpu = [], []  # wall s; (user, system) CPU s of all threads
    for _ in range(WARMUP_STEPS + TIMED_STEPS):
        started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        times.append(time.perf_counter() - started)
        cpu.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
        assert torch.isfinite(loss), f"{layout}: loss {loss.item()}"
    step = statistics.median(times[WARMUP_STEPS:])
    user, system = (statistics.median(c[i] for c in cpu[WARMUP_STEPS:]) for i in (0, 1))
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 2**20
    return (f"| {layout} | {step:.2f} | **{BATCH / step:.2f}** | {' '.join(f'{t:.1f}' for t in times)} | {user:.1f} + "
            f"{system:.1f} | {peak:.1f} | {seed_step:.2f} ({BATCH / seed_step:.2f} img/s) | {seed_step / step:.2f}× |",
            step)


def main() -> int:
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})  # benchmark 1 is per core
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="aligned-forensics-bench-augment-") as folder:
        paths = make_inputs(Path(folder))
        rows = [quietly(partial(augmentation_row, label, sources))
                for label, sources in zip(ROWS, (paths, [decode_rgb(p) for p in paths]), strict=True)]
        print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')}", AUGMENT_HEADER, *(row for row, _ in rows),
              sep="\n", flush=True)
        profiler, out = cProfile.Profile(), io.StringIO()  # where ours spends its time
        profiler.runcall(one_pass, paths, apply_augmentation, PASSES)
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(f"ours / full {rows[0][1]:.2f}× (target {TARGET}×); cProfile of ours with decode:\n{out.getvalue()}")
    os.sched_setaffinity(0, all_cpus)
    torch.set_num_threads(TRAIN_THREADS)
    print(TRAIN_HEADER, flush=True)
    for layout in LAYOUTS:
        print(quietly(partial(train_row, layout))[0], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
