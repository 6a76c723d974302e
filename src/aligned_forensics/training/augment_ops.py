"""The augmentation's pixel operations, applied to a window around the final crop (fast) or to the whole
image (the reference). Both give the same pixels (tests/unit/test_augment.py):

* pointwise steps (jitter, grayscale, cutout, noise) only touch the window; cutout and noise use absolute
  positions (the noise of pixel (y, x, c) is a hash of (key, y, x, c)), so a window sees what the whole would;
* contrast blends with the mean grey of the *whole* image at that point, computed on every 4th row and column
  (1/16 of the pixels: a documented approximation of torchvision's exact mean, within a fraction of a level);
* blur needs its window widened by its radius (int(4σ + 0.5)); JPEG needs a window aligned to its 16-pixel
  blocks (4:2:0) plus one block of margin for the decoder's chroma upsampling;
* rot90, flip and the crop only move pixels, so the window is found by mapping the crop back.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from aligned_forensics.detector.preprocessing import pad_to_at_least
from aligned_forensics.training.augment import AugmentDraw

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive
JPEG_BLOCK = 16  # a 4:2:0 MCU
MEAN_STRIDE = 4


def apply_augmentation(pixels: np.ndarray, draw: AugmentDraw, *, crop_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8, computing only the window the crop needs."""
    image = resized_crop(pixels, draw)
    height, width = image.shape[:2]
    turned = (width, height) if draw.quarter_turns % 2 else (height, width)
    if min(turned) < crop_size:  # padding needed: small images are cheap anyway
        return turn_and_crop(_degrade(image, draw, box=(0, 0, height, width)), draw, crop_size=crop_size)
    crop = _crop_box(draw, turned, crop_size)
    needed = _unturn(crop, draw, (height, width))
    jpeg_box = _align(needed, JPEG_BLOCK, (height, width)) if draw.jpeg_quality else needed
    radius = int(4 * draw.blur_sigma + 0.5) + 1 if draw.blur_sigma > 0 else 0
    window = _grow(jpeg_box, radius, (height, width))
    degraded = _degrade(image, draw, box=window, jpeg_box=jpeg_box)  # pixels of jpeg_box
    top, left = needed[0] - jpeg_box[0], needed[1] - jpeg_box[1]
    return _turn(degraded[top:top + needed[2] - needed[0], left:left + needed[3] - needed[1]], draw)


def apply_augmentation_full(pixels: np.ndarray, draw: AugmentDraw, *, crop_size: int) -> np.ndarray:
    """The reference: every step on the whole image, then rotate, flip and crop."""
    image = resized_crop(pixels, draw)
    return turn_and_crop(_degrade(image, draw, box=(0, 0, *image.shape[:2])), draw, crop_size=crop_size)


def resized_crop(pixels: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    """torchvision RandomResizedCrop's box (10 attempts, then a centre crop), resized bilinearly (PIL)."""
    if not draw.resized_crop:
        return pixels
    ratio, output = draw.resized_crop_ratio, draw.resized_crop_output
    height, width = pixels.shape[:2]
    box = None
    for scale, log_ratio, u, v in draw.resized_crop:
        area, aspect = height * width * scale, math.exp(log_ratio)
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(u * (height - h + 1)), int(v * (width - w + 1))
            box = (top, left, top + h, left + w)
            break
    if box is None:
        aspect = width / height
        w, h = (width, int(round(width / ratio[0]))) if aspect < ratio[0] else (
            (int(round(height * ratio[1])), height) if aspect > ratio[1] else (width, height))
        box = ((height - h) // 2, (width - w) // 2, (height - h) // 2 + h, (width - w) // 2 + w)
    region = Image.fromarray(np.ascontiguousarray(pixels[box[0]:box[2], box[1]:box[3]]))
    return np.asarray(region.resize((output, output), Image.BILINEAR))


def grey(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) float32 luma, truncated to whole levels like torchvision's uint8 grayscale."""
    return np.floor(pixels.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32))


def jitter(pixels: np.ndarray, steps: tuple[tuple[str, float], ...], *, image: np.ndarray) -> np.ndarray:
    """ColorJitter steps in order; contrast uses the mean grey of the whole `image` after the steps before it."""
    x = pixels.astype(np.float32)
    for index, (op, factor) in enumerate(steps):
        if op == "brightness":
            x = np.clip(x * factor, 0, 255)
        elif op == "contrast":
            sample = image[::MEAN_STRIDE, ::MEAN_STRIDE]
            before = jitter(sample, steps[:index], image=sample) if index else sample
            x = np.clip(factor * x + (1 - factor) * float(grey(before).mean()), 0, 255)
        elif op == "saturation":
            x = np.clip(factor * x + (1 - factor) * grey(np.floor(x))[..., None], 0, 255)
        else:  # hue: rotate in HSV (degrees in OpenCV's float convention)
            hsv = cv2.cvtColor(np.floor(x) / 255.0, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = np.mod(hsv[..., 0] + factor * 360.0, 360.0)
            x = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
        x = np.floor(x)  # each torchvision step returns whole uint8 levels
    return x.astype(np.uint8)


def gaussian_noise(shape: tuple[int, int], box: Box, *, key: int, sigma: float, width: int) -> np.ndarray:
    """(h, w, 3) float32 N(0, sigma²) noise of the pixels in `box`, a pure function of (key, y, x, c)."""
    rows = np.arange(box[0], box[2], dtype=np.uint64)[:, None, None]
    cols = np.arange(box[1], box[3], dtype=np.uint64)[None, :, None]
    index = (rows * np.uint64(width) + cols) * np.uint64(3) + np.arange(3, dtype=np.uint64)
    bits = _splitmix64(index ^ np.uint64(key))
    u1 = ((bits >> np.uint64(40)).astype(np.float64) + 1.0) / 2.0**24  # (0, 1]
    u2 = (bits & np.uint64(0xFFFFFF)).astype(np.float64) / 2.0**24
    return (sigma * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)).astype(np.float32)


def jpeg(pixels: np.ndarray, *, quality: int, method: str) -> np.ndarray:
    """Encode and decode as JPEG (4:2:0) with OpenCV or Pillow."""
    if method == "cv2":
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _degrade(image: np.ndarray, draw: AugmentDraw, *, box: Box, jpeg_box: Box | None = None) -> np.ndarray:
    """Jitter → grayscale → cutout → noise → blur on image[box]; then JPEG on jpeg_box (default: box)."""
    height, width = image.shape[:2]
    x = image[box[0]:box[2], box[1]:box[3]]
    if draw.jitter:
        x = jitter(x, draw.jitter, image=image)
    if draw.grayscale:
        x = np.repeat(grey(x).astype(np.uint8)[..., None], 3, axis=2)
    if draw.cutout is not None:
        x, side = x.copy(), draw.cutout_side
        top = int(np.clip(int(draw.cutout[0] * height) - side // 2, 0, height))  # as albumentations' Cutout
        left = int(np.clip(int(draw.cutout[1] * width) - side // 2, 0, width))
        x[max(top - box[0], 0):max(min(top + side, height) - box[0], 0),
          max(left - box[1], 0):max(min(left + side, width) - box[1], 0)] = draw.cutout_fill
    if draw.noise_sigma > 0:
        noise = gaussian_noise(x.shape[:2], box, key=draw.noise_key, sigma=draw.noise_sigma, width=width)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if draw.blur_sigma > 0:
        x = gaussian_filter(x, sigma=(draw.blur_sigma, draw.blur_sigma, 0), truncate=4.0, mode="reflect")
    if jpeg_box is not None and jpeg_box != box:
        x = x[jpeg_box[0] - box[0]:jpeg_box[2] - box[0], jpeg_box[1] - box[1]:jpeg_box[3] - box[1]]
    if draw.jpeg_quality:
        x = jpeg(x, quality=draw.jpeg_quality, method=draw.jpeg_method)
    return x


def turn_and_crop(x: np.ndarray, draw: AugmentDraw, *, crop_size: int) -> np.ndarray:
    """(H, W, C) any dtype -> (crop, crop, C): the draw's quarter turns, flip, padding and crop, nothing else."""
    x = pad_to_at_least(_turn(x, draw), crop_size)
    top, left, bottom, right = _crop_box(draw, x.shape[:2], crop_size)
    return np.ascontiguousarray(x[top:bottom, left:right])


def _turn(x: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    x = np.rot90(x, draw.quarter_turns)  # counter-clockwise, like PIL's rotate(90 k, expand=True)
    return np.ascontiguousarray(x[:, ::-1] if draw.flip else x)


def _crop_box(draw: AugmentDraw, shape: tuple[int, int], crop_size: int) -> Box:
    top = int(draw.crop_top * (shape[0] - crop_size + 1))
    left = int(draw.crop_left * (shape[1] - crop_size + 1))
    return top, left, top + crop_size, left + crop_size


def _unturn(box: Box, draw: AugmentDraw, shape: tuple[int, int]) -> Box:
    """The box in the unrotated image whose rot90 and flip give `box` in the final image."""
    height, width = shape
    top, left, bottom, right = box
    turned_width = height if draw.quarter_turns % 2 else width
    if draw.flip:
        left, right = turned_width - right, turned_width - left
    k = draw.quarter_turns % 4
    if k == 1:
        return left, width - bottom, right, width - top
    if k == 2:
        return height - bottom, width - right, height - top, width - left
    if k == 3:
        return height - right, top, height - left, bottom
    return top, left, bottom, right


def _align(box: Box, block: int, shape: tuple[int, int]) -> Box:
    """Grow `box` by one block and snap it outwards to the block grid (clipped to the image)."""
    top, left = max(0, (box[0] - block) // block * block), max(0, (box[1] - block) // block * block)
    bottom = min(shape[0], -(-(box[2] + block) // block) * block)
    right = min(shape[1], -(-(box[3] + block) // block) * block)
    return top, left, bottom, right


def _grow(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    return (max(0, box[0] - margin), max(0, box[1] - margin), min(shape[0], box[2] + margin),
            min(shape[1], box[3] + margin))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
