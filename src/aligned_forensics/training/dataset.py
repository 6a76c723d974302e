"""Datasets over the manifest: synced pairs or independent items, seeded per (seed, epoch, index)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.io import read_csv
from aligned_forensics.detector.preprocessing import center_crop, to_normalised_tensor
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.augment_ops import apply_augmentation

REAL, FAKE = 0, 1


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


class SyncedPairs(Dataset):
    """Item (epoch, i) -> (real, fake) tensors augmented with one shared draw from (seed, epoch, i)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], augment: AugmentConfig, *, seed: int) -> None:
        self.pairs, self.augment, self.seed = list(pairs), augment, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        draw = draw_augmentation(self.augment, np.random.default_rng([self.seed, epoch, index]))
        real, fake = (to_normalised_tensor(apply_augmentation(decode_rgb(Path(p)), draw,
                                                              crop_size=self.augment.crop_size))
                      for p in self.pairs[index])
        return real, fake


class IndependentItems(Dataset):
    """Reals and fakes as separate items (the non-synced 'Ours' model), each with its own draw."""

    def __init__(self, pairs: Sequence[tuple[str, str]], augment: AugmentConfig, *, seed: int) -> None:
        self.items = [(real, REAL) for real, _ in pairs] + [(fake, FAKE) for _, fake in pairs]
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        path, label = self.items[index]
        draw = draw_augmentation(self.augment, np.random.default_rng([self.seed, epoch, index]))
        return to_normalised_tensor(apply_augmentation(decode_rgb(Path(path)), draw,
                                                       crop_size=self.augment.crop_size)), label


class ValidationItems(Dataset):
    """Every real and fake of a split, centre-cropped (deterministic), labelled 0/1."""

    def __init__(self, pairs: Sequence[tuple[str, str]], *, crop_size: int) -> None:
        self.items = [(real, REAL) for real, _ in pairs] + [(fake, FAKE) for _, fake in pairs]
        self.crop_size = crop_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return to_normalised_tensor(center_crop(decode_rgb(Path(path)), self.crop_size)), label


def collate_synced(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """B pairs -> (2B, 3, c, c) images, rows 0..B-1 the reals and B..2B-1 their reconstructions, labels."""
    reals = torch.stack([real for real, _ in batch])
    fakes = torch.stack([fake for _, fake in batch])
    labels = torch.cat([torch.zeros(len(batch)), torch.ones(len(batch))])
    return torch.cat([reals, fakes]), labels
