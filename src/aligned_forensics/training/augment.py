"""The paper's training augmentation, drawn once per pair (so a real and its reconstruction get the same).

Order (the original training code's `make_processing`): RandomResizedCrop (p .2, to 256²) →
ColorJitter (p .8; brightness, contrast, saturation .4, hue .1, in random order) → Grayscale (p .2) →
Cutout (p .2, one 48² hole of grey 128) → Gaussian noise (p .2, variance U(10, 50)) → Gaussian blur (p .5,
σ U(0, 3)) → JPEG (p .5, cv2 or PIL, quality U{30..100}) → rot90 (p 1, k U{0..3}) → horizontal flip (p .5)
→ random 96² crop (symmetric padding when smaller) → ImageNet normalisation. Pixels: augment_ops.py.
Before all of it, off by default: DDA's pixel mixup of a fake with its own real (mixup.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aligned_forensics.common.params import require

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
RRC_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes, then falls back to a centre crop


@dataclass(frozen=True)
class AugmentConfig:
    """params.yaml `train.augment` (defaults: the paper's script_train.sh)."""

    crop_size: int = 96  # final square crop fed to the network
    resized_crop_prob: float = 0.2
    resized_crop_output: int = 256
    resized_crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction
    resized_crop_ratio: tuple[float, float] = (0.75, 4 / 3)  # aspect ratio, drawn log-uniformly
    jitter_prob: float = 0.8
    brightness: float = 0.4  # factor ~ U(1 - b, 1 + b)
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # shift ~ U(-h, h) of a full turn
    grayscale_prob: float = 0.2
    cutout_prob: float = 0.2
    cutout_side: int = 48
    cutout_fill: int = 128
    noise_prob: float = 0.2
    noise_variance: tuple[float, float] = (10.0, 50.0)  # on the 0..255 scale
    blur_prob: float = 0.5
    blur_sigma_max: float = 3.0  # sigma ~ U(0, max)
    jpeg_prob: float = 0.5
    jpeg_quality_min: int = 30  # quality ~ U{min..max}
    jpeg_quality_max: int = 100
    jpeg_methods: tuple[str, ...] = ("cv2", "pil")  # one drawn uniformly per image
    rot90_prob: float = 1.0  # then k ~ U{0, 1, 2, 3} quarter turns
    flip_prob: float = 0.5
    mixup_prob: float = 0.0  # DDA's pixel mixup of a fake with its own real (training/mixup.py); 0 = off
    mixup_ratio: tuple[float, float] = (0.0, 0.8)  # the real's weight r ~ U(low, high); DDA: U(0, 0.8)

    def __post_init__(self) -> None:
        key = "train.augment"
        require(self.crop_size >= 8, f"{key}.crop_size", "an integer >= 8", self.crop_size)
        require(self.resized_crop_output >= 1, f"{key}.resized_crop_output", "an integer >= 1",
                self.resized_crop_output)
        for name in ("resized_crop_prob", "jitter_prob", "grayscale_prob", "cutout_prob", "noise_prob", "blur_prob",
                     "jpeg_prob", "rot90_prob", "flip_prob", "mixup_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{key}.{name}", "a probability in [0, 1]", value)
        for name in ("resized_crop_scale", "resized_crop_ratio", "noise_variance"):
            pair = getattr(self, name)
            require(len(pair) == 2 and 0 <= pair[0] <= pair[1] and (name != "resized_crop_ratio" or pair[0] > 0),
                    f"{key}.{name}", "[low, high] with 0 <= low <= high (ratio: low > 0)", pair)
        for name in ("brightness", "contrast", "saturation"):
            require(0 <= getattr(self, name) < 1, f"{key}.{name}", "in [0, 1)", getattr(self, name))
        require(0 <= self.hue <= 0.5, f"{key}.hue", "in [0, 0.5]", self.hue)
        require(self.blur_sigma_max >= 0, f"{key}.blur_sigma_max", ">= 0", self.blur_sigma_max)
        require(1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100, f"{key}.jpeg_quality_min/jpeg_quality_max",
                "1 <= min <= max <= 100", (self.jpeg_quality_min, self.jpeg_quality_max))
        require(len(self.jpeg_methods) >= 1 and set(self.jpeg_methods) <= {"cv2", "pil"}, f"{key}.jpeg_methods",
                "a non-empty list of cv2 and/or pil", self.jpeg_methods)
        require(len(self.mixup_ratio) == 2 and 0 <= self.mixup_ratio[0] <= self.mixup_ratio[1] <= 1,
                f"{key}.mixup_ratio", "[low, high] with 0 <= low <= high <= 1", self.mixup_ratio)
        require(self.cutout_side >= 1 and 0 <= self.cutout_fill <= 255, f"{key}.cutout_side/cutout_fill",
                "side >= 1, fill in 0..255", (self.cutout_side, self.cutout_fill))


@dataclass(frozen=True)
class AugmentDraw:
    """Every random decision for one image (or one real/fake pair); positions are fractions of the size."""

    resized_crop: tuple[tuple[float, float, float, float], ...]  # () = off; else attempts (scale, log ratio, u, v)
    jitter: tuple[tuple[str, float], ...]  # (op, factor) in application order; () = off; hue's factor is a shift
    grayscale: bool
    cutout: tuple[float, float] | None  # hole centre as fractions (y, x)
    noise_sigma: float  # 0 = off
    noise_key: int  # keys the per-pixel noise by absolute position (same noise whatever window is computed)
    blur_sigma: float  # 0 = off
    jpeg_quality: int  # 0 = off
    jpeg_method: str
    quarter_turns: int
    flip: bool
    crop_top: float  # relative position in [0, 1) of the crop inside the (padded) image
    crop_left: float
    resized_crop_output: int = 256  # the config values the pixel steps need, carried along
    resized_crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    cutout_side: int = 48
    cutout_fill: int = 128


def draw_augmentation(config: AugmentConfig, rng: np.random.Generator) -> AugmentDraw:
    """Draw one augmentation; the same number of draws happens whatever is applied (stable streams)."""
    u = rng.random(16)
    attempts = rng.random((RRC_ATTEMPTS, 4))
    low, high = config.resized_crop_scale
    log_low, log_high = math.log(config.resized_crop_ratio[0]), math.log(config.resized_crop_ratio[1])
    factors = rng.random(4)
    order = rng.permutation(4)
    jitter = []
    for op_index in order:
        op = JITTER_OPS[op_index]
        if op == "hue":
            jitter.append((op, float((2 * factors[op_index] - 1) * config.hue)))
        else:
            spread = getattr(config, op)
            jitter.append((op, float(1 - spread + 2 * spread * factors[op_index])))
    variance = config.noise_variance[0] + u[8] * (config.noise_variance[1] - config.noise_variance[0])
    quality_span = config.jpeg_quality_max - config.jpeg_quality_min + 1
    return AugmentDraw(
        resized_crop=tuple((low + a[0] * (high - low), log_low + a[1] * (log_high - log_low), a[2], a[3])
                           for a in attempts) if u[0] < config.resized_crop_prob else (),
        jitter=tuple(jitter) if u[1] < config.jitter_prob else (),
        grayscale=bool(u[2] < config.grayscale_prob),
        cutout=(float(u[4]), float(u[5])) if u[3] < config.cutout_prob else None,
        noise_sigma=float(math.sqrt(variance)) if u[7] < config.noise_prob else 0.0,
        noise_key=int(rng.integers(0, 2**62)),
        blur_sigma=float(u[10] * config.blur_sigma_max) if u[9] < config.blur_prob else 0.0,
        jpeg_quality=int(config.jpeg_quality_min + int(u[12] * quality_span)) if u[11] < config.jpeg_prob else 0,
        jpeg_method=config.jpeg_methods[int(u[6] * len(config.jpeg_methods))],
        quarter_turns=int(u[14] * 4) if u[13] < config.rot90_prob else 0,
        flip=bool(u[15] < config.flip_prob),
        crop_top=float(rng.random()),
        crop_left=float(rng.random()),
        resized_crop_output=config.resized_crop_output,
        resized_crop_ratio=config.resized_crop_ratio,
        cutout_side=config.cutout_side,
        cutout_fill=config.cutout_fill,
    )
