"""Datasets over the manifest: synced pairs or independent items, aligned or unaligned, seeded per (seed, epoch, index).

Aligned (the paper's): each real comes with its own reconstruction. Unaligned (the baseline it is compared with):
reals and fakes come from disjoint seeded halves of the pairs, as when training on images generated from other
photos, so no real's own reconstruction is ever used."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.io import read_csv
from aligned_forensics.detector.preprocessing import center_crop, to_normalised_tensor
from aligned_forensics.training.augment import AugmentConfig, AugmentDraw, draw_augmentation
from aligned_forensics.training.augment_ops import apply_augmentation, turn_and_crop
from aligned_forensics.training.mixup import mixed_fake

REAL, FAKE = 0, 1
Pairing = Literal["aligned", "unaligned"]
SPLIT_STREAM, PARTNER_STREAM = 0x5B1, 0xFA4  # separate the unaligned draws from the cap's and the sampler's


def load_pairs(manifest_path: Path) -> list[tuple[str, str]]:
    """(real_path, fake_path) rows of a manifest CSV, in file order (sorted by stem)."""
    return [(row["real_path"], row["fake_path"]) for row in read_csv(manifest_path)]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) in a permutation seeded by (seed, epoch): workers need no shared state.

    With `world` processes, rank r takes the r-th slice of `chunk` items of every global batch of
    chunk x world items, so the ranks together see exactly the one-process batches; the last incomplete
    global batch is dropped (every rank must take the same number of steps)."""

    def __init__(self, length: int, *, seed: int, shuffle: bool, rank: int = 0, world: int = 1,
                 chunk: int = 1) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.rank, self.world, self.chunk = rank, world, chunk

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (np.random.default_rng([self.seed, self.epoch, 0x5A3]).permutation(self.length)
                 if self.shuffle else np.arange(self.length))
        if self.world > 1:
            batches = order[: len(self) * self.world].reshape(-1, self.world, self.chunk)  # (steps, world, chunk)
            order = batches[:, self.rank].reshape(-1)
        return iter((self.epoch, int(i)) for i in order)

    def __len__(self) -> int:
        if self.world == 1:
            return self.length
        return self.length // (self.chunk * self.world) * self.chunk


Maps = Mapping[str, np.ndarray]  # path -> (H, W, C) float32 output of the detector's input filter (filter_once)


def turned_map(maps: Maps, path: str, draw: AugmentDraw, crop_size: int) -> torch.Tensor:
    """(C, c, c) crop of a precomputed filter output, turned, flipped and cropped as the draw says."""
    return torch.from_numpy(turn_and_crop(maps[path], draw, crop_size=crop_size)).permute(2, 0, 1)


class SyncedPairs(Dataset):
    """Item (epoch, i) -> (real, fake) tensors augmented with one shared draw from (seed, epoch, i)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], augment: AugmentConfig, *, seed: int,
                 maps: Maps | None = None) -> None:
        self.pairs, self.augment, self.seed, self.maps = list(pairs), augment, seed, maps

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        draw = draw_augmentation(self.augment, np.random.default_rng([self.seed, epoch, index]))
        if self.maps is not None:
            real, fake = (turned_map(self.maps, p, draw, self.augment.crop_size) for p in self.pairs[index])
            return real, fake
        real, fake = (decode_rgb(Path(p)) for p in self.pairs[index])
        fake = mixed_fake(fake, lambda: real, self.augment, key=(self.seed, epoch, index))
        real, fake = (to_normalised_tensor(apply_augmentation(pixels, draw, crop_size=self.augment.crop_size))
                      for pixels in (real, fake))
        return real, fake


class UnalignedPairs(Dataset):
    """Item (epoch, i) -> (real i, a fake re-partnered every epoch) from disjoint lists, each with its own draw.

    The partner is a permutation of the fakes seeded by (seed, epoch): deterministic in any worker or rank, and
    a real meets different fakes in different epochs. One shared draw would be no trick here: the two images
    share no content, so each gets its own."""

    def __init__(self, reals: Sequence[str], fakes: Sequence[str], augment: AugmentConfig, *, seed: int,
                 sources: Mapping[str, str] | None = None, maps: Maps | None = None) -> None:
        self.maps = maps
        if len(reals) != len(fakes):
            raise ValueError(f"unaligned pairs need as many reals as fakes, got {len(reals)} and {len(fakes)}")
        self.reals, self.fakes, self.augment, self.seed = list(reals), list(fakes), augment, seed
        self.sources = sources or {}  # fake -> the real it was made from (mixup blends the two, not the partner)
        self._partners: tuple[int, np.ndarray] | None = None  # (epoch, its permutation): computed once per epoch

    def __len__(self) -> int:
        return len(self.reals)

    def paths(self, key: tuple[int, int]) -> tuple[str, str]:
        """The (real, fake) files of item (epoch, index)."""
        epoch, index = key
        if self._partners is None or self._partners[0] != epoch:
            order = np.random.default_rng([self.seed, epoch, PARTNER_STREAM]).permutation(len(self.fakes))
            self._partners = (epoch, order)
        return self.reals[index], self.fakes[int(self._partners[1][index])]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        real, fake = (self._augmented(path, label, key=(self.seed, epoch, index, label))
                      for path, label in zip(self.paths(key), (REAL, FAKE), strict=True))
        return real, fake

    def _augmented(self, path: str, label: int, *, key: tuple[int, ...]) -> torch.Tensor:
        """One file decoded (a fake maybe mixed with its own real) and augmented with a draw of its own: (3, c, c)."""
        if self.maps is not None:
            return turned_map(self.maps, path, draw_augmentation(self.augment, np.random.default_rng(key)),
                              self.augment.crop_size)
        pixels = decode_rgb(Path(path))
        if label == FAKE:
            pixels = mixed_fake(pixels, lambda: decode_rgb(Path(self.sources[path])), self.augment, key=key)
        draw = draw_augmentation(self.augment, np.random.default_rng(key))
        return to_normalised_tensor(apply_augmentation(pixels, draw, crop_size=self.augment.crop_size))


class IndependentItems(Dataset):
    """Reals and fakes as separate items (the non-synced 'Ours' model), each with its own draw."""

    def __init__(self, reals: Sequence[str], fakes: Sequence[str], augment: AugmentConfig, *, seed: int,
                 sources: Mapping[str, str] | None = None, maps: Maps | None = None) -> None:
        self.items = [(real, REAL) for real in reals] + [(fake, FAKE) for fake in fakes]
        self.augment, self.seed, self.maps = augment, seed, maps
        self.sources = sources or {}  # fake -> the real it was made from (for mixup)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        path, label = self.items[index]
        draw = draw_augmentation(self.augment, np.random.default_rng([self.seed, epoch, index]))
        if self.maps is not None:
            return turned_map(self.maps, path, draw, self.augment.crop_size), label
        pixels = decode_rgb(Path(path))
        if label == FAKE:
            pixels = mixed_fake(pixels, lambda: decode_rgb(Path(self.sources[path])), self.augment,
                                key=(self.seed, epoch, index))
        return to_normalised_tensor(apply_augmentation(pixels, draw, crop_size=self.augment.crop_size)), label


def split_unaligned(pairs: Sequence[tuple[str, str]], *, seed: int) -> tuple[list[str], list[str]]:
    """(the reals of half A, the fakes of half B): two disjoint seeded halves of the pairs, in manifest order.

    Each half has len(pairs) // 2 pairs; with an odd count one pair is left out, so every real has a partner."""
    half = len(pairs) // 2
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(pairs))
    return [pairs[i][0] for i in sorted(order[:half])], [pairs[i][1] for i in sorted(order[half:2 * half])]


def train_dataset(pairs: Sequence[tuple[str, str]], augment: AugmentConfig, *, pairing: Pairing, sync: bool,
                  seed: int, maps: Maps | None = None) -> Dataset:
    """The training items: (real, fake) couples when `sync` (for collate_synced), labelled images otherwise.

    With `maps` (filter_once) items are crops of each file's precomputed filter output instead of its pixels."""
    sources = {fake: real for real, fake in pairs}  # mixup blends a fake with the real it was made from
    if pairing == "aligned":
        if sync:
            return SyncedPairs(pairs, augment, seed=seed, maps=maps)
        return IndependentItems([real for real, _ in pairs], [fake for _, fake in pairs], augment, seed=seed,
                                sources=sources, maps=maps)
    reals, fakes = split_unaligned(pairs, seed=seed)
    return (UnalignedPairs if sync else IndependentItems)(reals, fakes, augment, seed=seed, sources=sources,
                                                          maps=maps)


class ValidationItems(Dataset):
    """Validation reals and fakes (pairs or not), centre-cropped (deterministic), labelled 0/1."""

    def __init__(self, reals: Sequence[str], fakes: Sequence[str], *, crop_size: int,
                 maps: Maps | None = None) -> None:
        self.items = [(real, REAL) for real in reals] + [(fake, FAKE) for fake in fakes]
        self.crop_size, self.maps = crop_size, maps

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        if self.maps is not None:  # the centre of the whole image's filter output
            return torch.from_numpy(center_crop(self.maps[path], self.crop_size)).permute(2, 0, 1), label
        return to_normalised_tensor(center_crop(decode_rgb(Path(path)), self.crop_size)), label


def collate_synced(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """B couples -> (2B, 3, c, c) images, rows 0..B-1 the reals and B..2B-1 the fakes (aligned: theirs), labels."""
    reals = torch.stack([real for real, _ in batch])
    fakes = torch.stack([fake for _, fake in batch])
    labels = torch.cat([torch.zeros(len(batch)), torch.ones(len(batch))])
    return torch.cat([reals, fakes]), labels
