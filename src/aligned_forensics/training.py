"""The train stage: Adam + BCE on synced (or independent) batches, validation every epoch, early stopping."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from aligned_forensics.augment import AugmentConfig
from aligned_forensics.checkpoints import save_checkpoint
from aligned_forensics.data import (
    EpochSampler,
    IndependentItems,
    SyncedPairs,
    ValidationItems,
    collate_synced,
    load_pairs,
)
from aligned_forensics.devices import pick_device
from aligned_forensics.errors import DataError
from aligned_forensics.models import Architecture, Pretrained, count_parameters, create_detector
from aligned_forensics.params import require
from aligned_forensics.progress import progress_bar
from aligned_forensics.sampling import seeded_subset
from aligned_forensics.threshold import detection_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml `train`."""

    arch: Architecture = "res50nodown"
    pretrained: Pretrained = "imagenet"
    seed: int = 17
    sync: bool = True  # batch = B reals + their B reconstructions, one augmentation draw per pair
    batch_size: int = 32  # pairs per batch when sync (2B images), images per batch otherwise
    data_cap: int = 0  # train on a seeded subset of this many pairs (0 = all)
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    max_epochs: int = 1000
    patience: int = 10  # epochs without a val balanced-accuracy gain > delta before LR x lr_decay
    delta: float = 0.001
    lr_decay: float = 0.1
    min_lr: float = 1e-6  # stop when the decayed LR would fall below this
    workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        require(self.data_cap >= 0, "train.data_cap", "an integer >= 0 (0 = all pairs)", self.data_cap)
        require(self.lr > 0, "train.lr", "a number > 0", self.lr)
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", "values in [0, 1)",
                (self.beta1, self.beta2))
        require(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        require(self.max_epochs >= 1, "train.max_epochs", "an integer >= 1", self.max_epochs)
        require(self.patience >= 1, "train.patience", "an integer >= 1", self.patience)
        require(0 < self.lr_decay < 1, "train.lr_decay", "a factor in (0, 1)", self.lr_decay)
        require(0 < self.min_lr <= self.lr, "train.min_lr", f"in (0, lr={self.lr}]", self.min_lr)
        require(self.workers >= 0, "train.workers", "an integer >= 0", self.workers)


@dataclass
class EarlyStopping:
    """The paper's schedule: no gain > delta for `patience` epochs → LR × decay; below min_lr → stop."""

    patience: int
    delta: float
    lr_decay: float
    min_lr: float
    best: float = -np.inf
    countdown: int = 0

    def step(self, score: float, lr: float) -> tuple[bool, float, bool]:
        """Feed one epoch's score; return (improved, next learning rate, stop)."""
        if score > self.best + self.delta or self.best == -np.inf:
            self.best, self.countdown = score, self.patience
            return True, lr, False
        self.countdown -= 1
        if self.countdown > 0:
            return False, lr, False
        self.countdown = self.patience
        new_lr = lr * self.lr_decay
        return False, new_lr, new_lr < self.min_lr * (1 - 1e-9)  # 1e-4·0.1·0.1 is 1.0000000000000002e-06


def make_train_loader(config: TrainConfig, manifest: Path) -> tuple[DataLoader, EpochSampler]:
    """DataLoader over the train manifest, synced or independent, seeded per (seed, epoch, index)."""
    pairs = seeded_subset(load_pairs(manifest), config.data_cap, seed=config.seed, stream=0xCA9)
    if not pairs:
        raise DataError(f"{manifest} has no pairs to train on")
    dataset = (SyncedPairs if config.sync else IndependentItems)(pairs, config.augment, seed=config.seed)
    sampler = EpochSampler(len(dataset), seed=config.seed, shuffle=True)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                        collate_fn=collate_synced if config.sync else None, drop_last=False,
                        persistent_workers=config.workers > 0)
    return loader, sampler


@torch.inference_mode()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Balanced accuracy at logit 0 (the early-stopping metric), AUC and AP on centre crops."""
    model.eval()
    scores, labels = [], []
    for images, batch_labels in loader:
        scores.append(model(images.to(device)).float().cpu())
        labels.append(batch_labels)
    metrics = detection_metrics(torch.cat(labels).numpy(), torch.cat(scores).numpy(), threshold=0.0)
    return {"val_bacc": metrics["bacc"], "val_auc": metrics["auc"], "val_ap": metrics["ap"]}


def train_detector(
    config: TrainConfig, *, train_manifest: Path, val_manifest: Path, model_dir: Path, live: Any
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train, validating before the first epoch and after each; write best.pt and last.pt.

    Returns (summary of the run, one row per epoch: epoch, train_loss, lr, val_bacc, val_auc, val_ap)."""
    device = pick_device(config.device)
    model = create_detector(config.arch, pretrained=config.pretrained, seed=config.seed).to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                 weight_decay=config.weight_decay)
    train_loader, sampler = make_train_loader(config, train_manifest)
    val_loader = DataLoader(ValidationItems(load_pairs(val_manifest), crop_size=config.augment.crop_size),
                            batch_size=64, num_workers=config.workers)
    log.info("%s: %s parameters, %s train %s/epoch, device %s", config.arch, f"{count_parameters(model):,}",
             f"{len(train_loader.dataset):,}", "pairs" if config.sync else "images", device)
    schedule = EarlyStopping(config.patience, config.delta, config.lr_decay, config.min_lr)
    lr, best, history, started = config.lr, {}, [], time.perf_counter()
    for epoch in range(config.max_epochs + 1):
        loss = _train_one_epoch(model, train_loader, sampler, optimizer, epoch, device, memory_format) \
            if epoch > 0 else float("nan")
        scores = validate(model, val_loader, device)
        improved, lr, stop = schedule.step(scores["val_bacc"], lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _log_epoch(live, epoch, loss, lr, scores)
        history.append({"epoch": epoch, "train_loss": loss, "lr": lr, **scores})
        if improved:
            best = {"epoch": epoch, **scores}
            save_checkpoint(model_dir / "best.pt", model, config=asdict(config), epoch=epoch, metrics=scores)
        if stop:
            log.info("learning rate would fall below %g: stopping after epoch %d", config.min_lr, epoch)
            break
    save_checkpoint(model_dir / "last.pt", model, config=asdict(config), epoch=epoch, metrics=scores)
    summary = {"epochs": epoch, "best_epoch": best["epoch"], "best_val_bacc": best["val_bacc"],
               "best_val_auc": best["val_auc"], "best_val_ap": best["val_ap"], "final_lr": lr,
               "train_seconds": time.perf_counter() - started}
    return summary, history


def _train_one_epoch(model, loader, sampler, optimizer, epoch, device, memory_format) -> float:
    model.train()
    sampler.set_epoch(epoch)
    criterion = torch.nn.BCEWithLogitsLoss()
    losses = []
    for images, labels in progress_bar(loader, desc=f"epoch {epoch}", unit="batch"):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        loss = criterion(model(images), labels.float().to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _log_epoch(live: Any, epoch: int, loss: float, lr: float, scores: dict[str, float]) -> None:
    log.info("epoch %d: loss %.4f, lr %.1e, val bacc %.4f, auc %.4f, ap %.4f", epoch, loss, lr,
             scores["val_bacc"], scores["val_auc"], scores["val_ap"])
    live.step = epoch
    if epoch > 0:
        live.log_metric("train_loss", loss)
    live.log_metric("lr", lr)
    for name, value in scores.items():
        live.log_metric(name, value)
    live.next_step()
