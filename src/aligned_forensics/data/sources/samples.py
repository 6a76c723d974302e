"""Offline demo source: seeded random crops of the natural photos bundled inside installed wheels.

Whole photos (grouped: the two motorcycle views are one scene) are assigned to a split, so no photo
leaks across train/val/test. Crops are saved as JPEG like COCO's photos, with sides multiple of 8.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.common.errors import DataError
from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.params import require
from aligned_forensics.data.sources.common import LoadedImage, SourceContext, encode_generated


@dataclass(frozen=True)
class SamplePhoto:
    name: str
    package: str
    relative_path: str
    group: str  # photos of one scene share a group and therefore a split


SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("astronaut", "skimage", "data/astronaut.png", "astronaut"),
    SamplePhoto("chelsea", "skimage", "data/chelsea.png", "chelsea"),
    SamplePhoto("coffee", "skimage", "data/coffee.png", "coffee"),
    SamplePhoto("rocket", "skimage", "data/rocket.jpg", "rocket"),
    SamplePhoto("hubble", "skimage", "data/hubble_deep_field.jpg", "hubble"),
    SamplePhoto("retina", "skimage", "data/retina.jpg", "retina"),
    SamplePhoto("motorcycle_left", "skimage", "data/motorcycle_left.png", "motorcycle"),
    SamplePhoto("motorcycle_right", "skimage", "data/motorcycle_right.png", "motorcycle"),
    SamplePhoto("china", "sklearn", "datasets/images/china.jpg", "china"),
    SamplePhoto("flower", "sklearn", "datasets/images/flower.jpg", "flower"),
    SamplePhoto("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper"),
)


@dataclass(frozen=True)
class Config:
    """`fetch.sources[i]` for kind `samples`."""

    kind: Literal["samples"]
    crops_per_photo: int = 40
    min_side: int = 64  # crop sides are multiples of 8 drawn uniformly in [min_side, max_side]
    max_side: int = 128
    val_groups: int = 2  # photo groups (scenes) held out for validation
    test_groups: int = 2
    other_groups: Literal["train", "val"] = "train"  # where the remaining scenes go (val: train on other sources)
    image_format: Literal["jpeg", "png"] = "jpeg"  # crops as JPEG like COCO's photos, or lossless png
    jpeg_quality: int = 90  # image_format jpeg only

    def __post_init__(self) -> None:
        key = "fetch.sources[samples]"
        require(self.crops_per_photo >= 1, f"{key}.crops_per_photo", "an integer >= 1", self.crops_per_photo)
        require(self.min_side >= 8 and self.min_side % 8 == 0, f"{key}.min_side", "a multiple of 8", self.min_side)
        require(self.max_side % 8 == 0 and self.max_side >= self.min_side, f"{key}.max_side",
                f"a multiple of 8 >= min_side ({self.min_side}) and <= 256", self.max_side)
        require(self.max_side <= 256, f"{key}.max_side", "<= 256 (the smallest bundled photo side)", self.max_side)
        groups = len({photo.group for photo in SAMPLE_PHOTOS})
        require(self.val_groups >= 1 and self.test_groups >= 1 and self.val_groups + self.test_groups < groups,
                f"{key}.val_groups + test_groups", f"each >= 1 and together < {groups} (scenes available)",
                (self.val_groups, self.test_groups))
        require(1 <= self.jpeg_quality <= 100, f"{key}.jpeg_quality", "1..100", self.jpeg_quality)
        require(self.other_groups in ("train", "val"), f"{key}.other_groups", "train or val", self.other_groups)
        require(self.image_format in ("jpeg", "png"), f"{key}.image_format", "jpeg or png", self.image_format)


def assign_groups(
    groups: list[str], *, val_groups: int, test_groups: int, seed: int, other_groups: str = "train"
) -> dict[str, str]:
    """Map each group to 'train', 'val' or 'test' by a seeded shuffle of the sorted group names."""
    ordered = sorted(set(groups))
    rng = np.random.default_rng([seed, 0x5A3])
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    splits = ["val"] * val_groups + ["test"] * test_groups
    splits += [other_groups] * (len(shuffled) - len(splits))
    return dict(zip(shuffled, splits, strict=True))


def draw_crops(
    height: int, width: int, *, count: int, min_side: int, max_side: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Draw `count` crops (top, left, crop_height, crop_width) with sides multiple of 8 inside the image."""
    crops = []
    for _ in range(count):
        crop_height = 8 * int(rng.integers(min_side // 8, min(max_side, height) // 8 + 1))
        crop_width = 8 * int(rng.integers(min_side // 8, min(max_side, width) // 8 + 1))
        top = int(rng.integers(0, height - crop_height + 1))
        left = int(rng.integers(0, width - crop_width + 1))
        crops.append((top, left, crop_height, crop_width))
    return crops


def plan(config: Config, context: SourceContext) -> list[dict[str, Any]]:
    """List every crop to produce, with its split; pixels are only cut when `load` is called."""
    seed = context.seed
    split_of = assign_groups([p.group for p in SAMPLE_PHOTOS], val_groups=config.val_groups,
                             test_groups=config.test_groups, seed=seed, other_groups=config.other_groups)
    items = []
    for photo_index, photo in enumerate(SAMPLE_PHOTOS):
        path = bundled_photo_path(photo)
        height, width = _photo_shape(path)
        rng = np.random.default_rng([seed, photo_index])  # one stream per photo: adding photos moves nothing
        crops = draw_crops(height, width, count=config.crops_per_photo, min_side=config.min_side,
                           max_side=config.max_side, rng=rng)
        for crop_index, (top, left, crop_height, crop_width) in enumerate(crops):
            items.append({
                "stem": f"samples-{photo.name}-{crop_index:04d}",
                "split": split_of[photo.group],
                "source": "samples",
                "origin": f"{photo.package}/{photo.relative_path} crop top={top} left={left} "
                          f"h={crop_height} w={crop_width}",
                "load": _CropLoader(path, top, left, crop_height, crop_width, config.image_format, config.jpeg_quality),
            })
    return items


def bundled_photo_path(photo: SamplePhoto) -> Path:
    """Locate a photo inside its installed package, with a clear error if the package is missing."""
    spec = importlib.util.find_spec(photo.package)
    if spec is None or spec.origin is None:
        raise DataError(f"the samples source needs the '{photo.package}' package for {photo.name}; "
                        f"run `pip install -r requirements.txt`")
    path = Path(spec.origin).parent / photo.relative_path
    if not path.is_file():
        raise DataError(f"bundled photo not found: {path} (expected in the installed '{photo.package}')")
    return path


@cache
def _photo_shape(path: Path) -> tuple[int, int]:
    height, width, _ = decode_rgb(path).shape
    return height, width


@dataclass(frozen=True)
class _CropLoader:
    path: Path
    top: int
    left: int
    crop_height: int
    crop_width: int
    image_format: str
    quality: int

    def __call__(self) -> LoadedImage:
        pixels = _decoded(self.path)[self.top:self.top + self.crop_height, self.left:self.left + self.crop_width]
        return encode_generated(np.ascontiguousarray(pixels), image_format=self.image_format,
                                jpeg_quality=self.quality, what="crop")


@cache
def _decoded(path: Path) -> np.ndarray:
    return decode_rgb(path)
