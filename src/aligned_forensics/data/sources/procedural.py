"""Source kind `procedural`: real images drawn by seeded programs instead of photographed (no download, no files).

The paper's "shaders" experiment in miniature: a detector trained on procedural images and their reconstructions
must still flag reconstructions of natural photos, so what it learns is the autoencoder's trace, not the content.
Three kinds of image, mixed by the fractions in the config:

- dead leaves: 150-600 occluding discs and rotated rectangles (per 64x64 pixels) with power-law radii, drawn at
  twice the size and area-downsampled; half of them get a 1/f texture on top;
- colour fields: 1/f^beta noise (beta in 1.6..3.2, power spectrum) with channels mixed by a random 3x3 matrix;
- blends of one of each through a blurred random mask.

Then a light Gaussian blur, sensor-like noise on half of the images, and JPEG like COCO's photos.
Every image is a pure function of (seed, index) and the config: its own numpy Generator is seeded from them, so a
resumed, reordered or partial fetch writes byte-identical files (with the same numpy, OpenCV and Pillow builds
on the same kind of CPU: their SIMD code paths may round differently elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from aligned_forensics.common.params import require
from aligned_forensics.data.sources.common import LoadedImage, SourceContext, encode_generated

KINDS = ("dead_leaves", "colour_field", "blend")  # the order of the config's fractions
REFERENCE_SIDE = 64  # the recipe's sizes (shape counts, radii, blur widths) are per 64x64 pixels
SUPERSAMPLE = 2  # dead leaves are drawn at twice the size, then area-averaged: soft, unaliased edges
SHIFT = 4  # fractional bits of OpenCV drawing coordinates (sub-pixel centres and radii)
MAX_SIDE = 1024  # shape counts and FFTs grow with the area: a 1024x1024 image takes seconds on one core


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `procedural`."""

    kind: Literal["procedural"]
    count: int = 1000  # images generated, indices 0..count-1
    seed: int | None = None  # this source's own seed (default: fetch.seed); part of every stem
    split: Literal["train", "val", "test"] = "train"  # every image goes here; add a second source for another split
    min_side: int = 64  # heights and widths are multiples of 8 drawn independently in [min_side, max_side]
    max_side: int = 128
    image_format: Literal["jpeg", "png"] = "jpeg"  # jpeg like COCO's photos, or lossless png
    jpeg_quality: int = 90  # image_format jpeg only
    dead_leaves: float = 0.6  # fractions of the three kinds; they add up to 1
    colour_field: float = 0.25
    blend: float = 0.15

    def __post_init__(self) -> None:
        key = "fetch.sources[procedural]"
        require(self.count >= 1, f"{key}.count", "an integer >= 1", self.count)
        require(self.min_side >= 16 and self.min_side % 8 == 0, f"{key}.min_side", "a multiple of 8 >= 16",
                self.min_side)
        require(self.max_side % 8 == 0 and self.min_side <= self.max_side <= MAX_SIDE, f"{key}.max_side",
                f"a multiple of 8 >= min_side ({self.min_side}) and <= {MAX_SIDE}", self.max_side)
        require(1 <= self.jpeg_quality <= 100, f"{key}.jpeg_quality", "1..100", self.jpeg_quality)
        require(self.image_format in ("jpeg", "png"), f"{key}.image_format", "jpeg or png", self.image_format)
        for name, fraction in zip(KINDS, self.fractions, strict=True):
            require(0 <= fraction <= 1, f"{key}.{name}", "a fraction in 0..1", fraction)
        require(math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6), f"{key}.dead_leaves + colour_field + blend",
                "fractions adding up to 1 (e.g. 0.6 + 0.25 + 0.15)", self.fractions)

    @property
    def fractions(self) -> tuple[float, float, float]:
        """The kind mix, in the order of KINDS."""
        return self.dead_leaves, self.colour_field, self.blend


@dataclass(frozen=True)
class Layout:
    """What an image will be, known at planning time (it goes into the index's `origin`)."""

    kind: str
    height: int
    width: int


def choose_kind(u: float, fractions: tuple[float, ...]) -> str:
    """The kind whose slice of [0, 1) holds `u`, slices laid out in the order of KINDS with the given widths."""
    edge = 0.0
    for kind, fraction in zip(KINDS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return kind
    # fractions may add up to 1 - 1e-6: a u above their sum belongs to the last kind that has any share
    return [kind for kind, fraction in zip(KINDS, fractions, strict=True) if fraction > 0][-1]


def image_streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(layout, content) Generators of one image, independent of every other image and of each other.

    Two streams so that the layout draws (kind, size) never shift the content's random numbers."""
    layout, content = np.random.SeedSequence([seed, index]).spawn(2)
    return np.random.default_rng(layout), np.random.default_rng(content)


def draw_layout(config: Config, rng: np.random.Generator) -> Layout:
    """Kind and size of one image from its layout stream."""
    kind = choose_kind(float(rng.random()), config.fractions)
    height = 8 * int(rng.integers(config.min_side // 8, config.max_side // 8 + 1))
    width = 8 * int(rng.integers(config.min_side // 8, config.max_side // 8 + 1))
    return Layout(kind, height, width)


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """One planned image per index; pixels are only drawn when `load` is called."""
    seed = context.seed if config.seed is None else config.seed
    items = []
    for index in range(config.count):
        layout = draw_layout(config, image_streams(seed, index)[0])
        items.append({
            "stem": f"procedural-{seed}-{index:06d}",
            "split": config.split,
            "source": f"procedural/{seed}",
            # everything the bytes depend on, so an index written with other settings is never taken as current
            "origin": f"procedural seed={seed} index={index} {layout.kind} {layout.width}x{layout.height} "
                      f"{config.image_format if config.image_format == 'png' else f'q{config.jpeg_quality}'}",
            "load": _ProceduralLoader(seed, index, config),
        })
    return items


def generate(config: Config, seed: int, index: int) -> tuple[Layout, np.ndarray]:
    """The layout and (H, W, 3) uint8 RGB pixels of image `index`: a pure function of its arguments."""
    layout_rng, rng = image_streams(seed, index)
    layout = draw_layout(config, layout_rng)
    height, width = layout.height, layout.width
    if layout.kind == "dead_leaves":
        image = dead_leaves(height, width, rng)
    elif layout.kind == "colour_field":
        image = colour_field(height, width, rng)
    else:
        image = blend(height, width, rng)
    return layout, finish(image, rng)


def scale_of(height: int, width: int) -> float:
    """Linear size relative to the recipe's 64x64 reference."""
    return math.sqrt(height * width) / REFERENCE_SIDE


def power_law_noise(height: int, width: int, beta: float, rng: np.random.Generator, *, channels: int = 1) -> np.ndarray:
    """(channels, H, W) float32 noise with power spectrum 1/f^beta, random phases, zero mean and unit std per channel.

    Drawn on a grid twice as large and cropped: FFT noise wraps around, and a crop of it does not."""
    big_height, big_width = 2 * height, 2 * width
    fy = np.fft.fftfreq(big_height).astype(np.float32)[:, None]  # (2H, 1) cycles per pixel
    fx = np.fft.rfftfreq(big_width).astype(np.float32)[None, :]  # (1, W + 1): numpy's rfft2 grid
    squared = fy**2 + fx**2  # (2H, W + 1) |f|^2
    squared[0, 0] = np.inf  # amplitude 0 at DC: no mean offset is drawn
    amplitude = squared ** np.float32(-beta / 4)  # |f|^(-beta/2), so power ~ 1/f^beta
    # float32 throughout: numpy's float64 complex exp and trigonometry are ~30x slower and dominated the time
    phases = rng.random((channels, *amplitude.shape), dtype=np.float32) * np.float32(2 * np.pi)  # (C, 2H, W + 1)
    spectrum = np.empty(phases.shape, np.complex64)
    spectrum.real = amplitude * np.cos(phases)
    spectrum.imag = amplitude * np.sin(phases)
    field = np.fft.irfft2(spectrum, s=(big_height, big_width))[:, :height, :width]  # (C, H, W) float32
    field = field - field.mean(axis=(1, 2), keepdims=True)
    return field / (field.std(axis=(1, 2), keepdims=True) + np.float32(1e-12))


def random_colour(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3) float colours in 0..255; 30 % near-grey (a grey level with small per-channel jitter)."""
    colours = rng.uniform(0, 255, size=(count, 3))
    grey = rng.uniform(0, 255, size=(count, 1)) + rng.normal(0, 6, size=(count, 3))
    near_grey = rng.random(count) < 0.3
    return np.clip(np.where(near_grey[:, None], grey, colours), 0, 255)


def power_law_radii(rng: np.random.Generator, count: int, exponent: float, r_min: float, r_max: float) -> np.ndarray:
    """(count,) radii with density ~ r^-exponent on [r_min, r_max] (inverse-CDF sampling; exponent > 1)."""
    a, b = r_min ** (1 - exponent), r_max ** (1 - exponent)
    return (a + rng.random(count) * (b - a)) ** (1 / (1 - exponent))


def dead_leaves(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in 0..255: occluding discs and rotated rectangles with power-law radii on a plain ground."""
    scale = scale_of(height, width)
    count = int(round(int(rng.integers(150, 601)) * scale**2))  # same density of shapes per pixel at any size
    exponent = rng.uniform(2.5, 3.5)
    r_max = rng.uniform(15, 50) * scale
    radii = power_law_radii(rng, count, exponent, 1.0, r_max) * SUPERSAMPLE  # (N,) canvas pixels
    centres = rng.uniform(0, 1, size=(count, 2)) * (width * SUPERSAMPLE, height * SUPERSAMPLE)  # (N, 2) x, y
    is_disc = (rng.random(count) < 0.6).tolist()
    corners = rectangle_corners(centres, radii, np.sqrt(rng.uniform(0.5, 2.0, size=count)),
                                rng.uniform(0, np.pi, size=count))  # (N, 4, 2) x, y
    colours = np.rint(random_colour(rng, count + 1)).astype(np.uint8)  # (N + 1, 3): the ground, then the shapes
    canvas = np.empty((height * SUPERSAMPLE, width * SUPERSAMPLE, 3), np.uint8)  # (2H, 2W, 3)
    canvas[:] = colours[0]
    # fixed-point integers for OpenCV, converted once: per-shape Python arithmetic would dominate the time
    unit = 1 << SHIFT
    centre_points = np.rint(centres * unit).astype(np.int64).tolist()
    radius_units = np.rint(radii * unit).astype(np.int64).tolist()
    corner_points = np.rint(corners * unit).astype(np.int32)
    shape_colours = colours[1:].tolist()
    for i in range(count):
        if is_disc[i]:
            cv2.circle(canvas, centre_points[i], radius_units[i], shape_colours[i], -1, cv2.LINE_AA, SHIFT)
        else:
            cv2.fillConvexPoly(canvas, corner_points[i], shape_colours[i], cv2.LINE_AA, SHIFT)
    image = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)  # (H, W, 3)
    if rng.random() < 0.5:  # a 1/f grey texture over the leaves, so flat areas are not perfectly flat
        amplitude = rng.uniform(3, 25)
        image += amplitude * power_law_noise(height, width, 2.0, rng)[0][..., None]
    return image


def rectangle_corners(centres: np.ndarray, radii: np.ndarray, aspects: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners of rectangles 2r*a by 2r/a centred at (N, 2) points and turned by `angles` radians."""
    half = np.stack([radii * aspects, radii / aspects], axis=-1)  # (N, 2) half sides
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)  # (4, 2) corners in order
    local = signs[None] * half[:, None]  # (N, 4, 2)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]  # (N, 1)
    x = local[..., 0] * cos - local[..., 1] * sin  # (N, 4)
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y], axis=-1) + centres[:, None]


def colour_field(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in 0..255: 1/f^beta noise, channels mixed by a random 3x3 matrix, random contrast/offset."""
    beta = rng.uniform(1.6, 3.2)
    fields = power_law_noise(height, width, beta, rng, channels=3)  # (3, H, W)
    mixing = rng.normal(0, 1, size=(3, 3)).astype(np.float32)
    mixed = np.einsum("ij,jhw->hwi", mixing, fields)  # (H, W, 3)
    low, high = mixed.min(axis=(0, 1)), mixed.max(axis=(0, 1))  # (3,)
    unit = (mixed - low) / np.maximum(high - low, 1e-6)  # (H, W, 3) in 0..1 per channel
    contrast = rng.uniform(40, 255)
    offsets = rng.uniform(0, 255 - contrast, size=3)  # (3,) per-channel: the field's overall colour
    return (offsets + contrast * unit).astype(np.float32)


def blend(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32: a dead-leaves image and a colour field, joined through a blurred random mask."""
    leaves = dead_leaves(height, width, rng)
    field = colour_field(height, width, rng)
    regions = power_law_noise(height, width, 3.5, rng)[0] > 0  # (H, W) large smooth blobs, about half each
    sigma = rng.uniform(0.5, 3.0) * scale_of(height, width)
    mask = cv2.GaussianBlur(regions.astype(np.float32), (0, 0), sigma)[..., None]  # (H, W, 1) in 0..1
    return mask * leaves + (1 - mask) * field


def finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like last steps on (H, W, 3) float32: slight blur, noise on half of the images, then uint8."""
    sigma = rng.uniform(0.0, 1.2)
    noisy = rng.random() < 0.5
    noise_sigma = rng.uniform(0.5, 4.0)
    if sigma > 0.3:  # below, the kernel is a near-identity that only costs time
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if noisy:
        image = image + rng.normal(0.0, noise_sigma, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)  # (H, W, 3)


@dataclass(frozen=True)
class _ProceduralLoader:
    seed: int
    index: int
    config: Config

    def __call__(self) -> LoadedImage:
        layout, pixels = generate(self.config, self.seed, self.index)
        return encode_generated(pixels, image_format=self.config.image_format, jpeg_quality=self.config.jpeg_quality,
                                what=f"procedural {layout.kind}")
