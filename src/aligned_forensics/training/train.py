"""The train stage: Adam + BCE on synced (or independent) batches, validation every epoch, early stopping."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader

from aligned_forensics.autoencoder.autoencoder import load_autoencoder
from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.download import downloads_dir
from aligned_forensics.common.errors import DataError, UserError
from aligned_forensics.common.image_sets import ValidationSet, decodable, resolve_validation
from aligned_forensics.common.params import require
from aligned_forensics.common.progress import progress_bar
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.common.watch import NOTHING_OUTSIDE, check_watched
from aligned_forensics.detector.checkpoints import read_checkpoint, save_checkpoint
from aligned_forensics.detector.metrics import detection_metrics
from aligned_forensics.detector.models import (
    Architecture,
    InputFilter,
    Pretrained,
    count_parameters,
    create_detector,
    prefiltered_inputs,
)
from aligned_forensics.training import determinism
from aligned_forensics.training.augment import AugmentConfig
from aligned_forensics.training.dataset import (
    EpochSampler,
    Pairing,
    ValidationItems,
    collate_synced,
    load_pairs,
    train_dataset,
)
from aligned_forensics.training.filter_once import FilterCache, check_geometric
from aligned_forensics.training.init_from import initial_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """The optimisation and schedule keys shared by `train` and `stay_positive` (named after `section`)."""

    section: ClassVar[str] = "train"
    seed: int = 17
    sync: bool = True  # batch = B reals + their B reconstructions, one augmentation draw per pair
    pairing: Pairing = "aligned"  # unaligned: reals and fakes from disjoint seeded halves of the pairs (dataset.py)
    batch_size: int = 32  # pairs per batch when sync (2B images), images per batch otherwise
    data_cap: int = 0  # train on a seeded subset of this many pairs (0 = all)
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    max_epochs: int = 1000
    select_by: Literal["bacc", "auc", "ap"] = "bacc"  # validation metric for best.pt and the schedule (bacc: at 0)
    patience: int = 10  # epochs without a gain > delta in that metric before LR x lr_decay
    delta: float = 0.001
    lr_decay: float = 0.1
    min_lr: float = 1e-6  # stop when the decayed LR would fall below this
    workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = True
    mixed_precision: bool = False  # bfloat16 autocast on CUDA (ignored on CPU)
    deterministic: bool = False  # deterministic cuDNN/cuBLAS kernels on CUDA: bit-exact reruns, slower (determinism.py)
    filter_once: bool = False  # the input filter once per whole image, then crops of its output (filter_once.py)

    def __post_init__(self) -> None:
        key = self.section
        require(self.pairing in get_args(Pairing), f"{key}.pairing",
                f"one of {', '.join(repr(p) for p in get_args(Pairing))}", self.pairing)
        require(self.batch_size >= 1, f"{key}.batch_size", "an integer >= 1", self.batch_size)
        require(self.data_cap >= 0, f"{key}.data_cap", "an integer >= 0 (0 = all pairs)", self.data_cap)
        require(self.lr > 0, f"{key}.lr", "a number > 0", self.lr)
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"{key}.beta1/beta2", "values in [0, 1)",
                (self.beta1, self.beta2))
        require(self.weight_decay >= 0, f"{key}.weight_decay", ">= 0", self.weight_decay)
        fixed_start = bool(getattr(self, "init_from", ""))  # max_epochs 0 validates init_from's model as it is
        require(self.max_epochs >= (0 if fixed_start else 1), f"{key}.max_epochs",
                "an integer >= 1 (0 only with train.init_from)", self.max_epochs)
        require(self.patience >= 1, f"{key}.patience", "an integer >= 1", self.patience)
        require(self.delta >= 0, f"{key}.delta", "a number >= 0", self.delta)
        require(0 < self.lr_decay < 1, f"{key}.lr_decay", "a factor in (0, 1)", self.lr_decay)
        require(0 < self.min_lr <= self.lr, f"{key}.min_lr", f"in (0, lr={self.lr}]", self.min_lr)
        require(self.workers >= 0, f"{key}.workers", "an integer >= 0", self.workers)


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """params.yaml `train`."""

    arch: Architecture = "res50nodown"
    pretrained: Pretrained = "imagenet"
    input_filter: InputFilter = "none"  # a fixed filter in front of the network: none | highpass | roundtrip
    init_from: str = ""  # a checkpoint to fine-tune (ours or a released one, as arch); "" = pretrained
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation: ValidationSet = field(default_factory=ValidationSet)  # "" everywhere = the manifest's val pairs
    val_per_class: int = 0  # validate on a seeded subset of this many reals and of fakes (0 = all)
    watch: str = NOTHING_OUTSIDE  # the outside folder/archive it reads, a DVC dependency (common/watch.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validation.check("train.validation")
        require(self.val_per_class >= 0, "train.val_per_class", "an integer >= 0 (0 = all)", self.val_per_class)

    def fingerprint(self, *manifests: Path, record: dict[str, Any] | None = None, extra: str = "") -> str:
        """What a resumed run must share with the interrupted one: every param, the data lists, the start."""
        digest = hashlib.sha256(json.dumps(asdict(self) | (record or {}), sort_keys=True, default=str).encode())
        for manifest in manifests:
            digest.update(Path(manifest).read_bytes())
        digest.update(extra.encode())  # e.g. the list of an unpaired validation set's files
        return digest.hexdigest()


@dataclass
class EarlyStopping:
    """The paper's schedule: no gain > delta for `patience` epochs → LR × decay; below min_lr → stop."""

    patience: int
    delta: float
    lr_decay: float
    min_lr: float
    best: float = -np.inf
    countdown: int = 0

    def state(self) -> dict[str, float]:
        return {"best": float(self.best), "countdown": self.countdown}

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


@dataclass(frozen=True)
class Retrain:
    """How a second training stage differs from training from scratch (the stay-positive retrain)."""

    model: torch.nn.Module  # the starting weights; parameters that must not move have requires_grad False
    record: dict[str, Any]  # saved in each checkpoint's config and part of the resume fingerprint
    train_mode: Callable[[torch.nn.Module], None]  # e.g. frozen modules (and their batch norms) stay in eval mode
    after_step: Callable[[torch.nn.Module], None]  # e.g. a projection of the weights after every optimiser step


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes: each takes every world-th item of an epoch."""

    rank: int = 0
    world: int = 1


def make_train_loader(config: TrainConfig, manifest: Path, ranks: Ranks = Ranks(), *, cache: FilterCache | None = None
                      ) -> tuple[DataLoader, EpochSampler]:
    """DataLoader over the train manifest, synced or independent, aligned or not, seeded per (seed, epoch, index).

    data_cap picks the pairs before an unaligned split halves them. With several ranks each loads
    batch_size / world of every global batch, so the global batch (and the averaged gradient) is the same as on
    one process."""
    pairs = seeded_subset(load_pairs(manifest), config.data_cap, seed=config.seed, stream=0xCA9)
    if not pairs:
        raise DataError(f"{manifest} has no pairs to train on")
    if config.pairing == "unaligned" and len(pairs) < 2:
        raise DataError(f"pairing 'unaligned' needs at least 2 train pairs (reals from one half, fakes from the "
                        f"other); {manifest} gives {len(pairs)}")
    if config.batch_size % ranks.world:
        raise DataError(f"train.batch_size {config.batch_size} is not divisible by the {ranks.world} processes")
    maps = cache.fill([path for pair in pairs for path in pair]) if cache else None
    dataset = train_dataset(pairs, config.augment, pairing=config.pairing, sync=config.sync, seed=config.seed,
                            maps=maps)
    sampler = EpochSampler(len(dataset), seed=config.seed, shuffle=True, rank=ranks.rank, world=ranks.world,
                           chunk=config.batch_size // ranks.world)
    loader = DataLoader(dataset, batch_size=config.batch_size // ranks.world, sampler=sampler,
                        num_workers=config.workers, collate_fn=collate_synced if config.sync else None,
                        drop_last=False, persistent_workers=config.workers > 0,
                        generator=determinism.loader_generator(config.seed, ranks.rank))
    return loader, sampler


def validation_files(config: TrainConfig, *, val_manifest: Path) -> tuple[list[str], list[str], str]:
    """(real paths, fake paths, a digest of their list) validating this run: the manifest's val pairs, or an
    unpaired set (train.validation) whose unreadable images are left out and logged; seeded val_per_class."""
    outside = [("train.validation", path, config.validation.checksum) for path in config.validation.paths()]
    check_watched(outside + ([("train.init_from", config.init_from, "")] if config.init_from else []),
                  watch=config.watch, section="train")  # init_from's bytes are a dependency too
    resolved = resolve_validation(config.validation, val_manifest=val_manifest, cache=downloads_dir(),
                                  stage="train")
    reals, fakes, rejects = resolved.reals, resolved.fakes, list(resolved.rejects)
    if config.validation.unpaired:  # a manifest was decoded in full already; outside images were not
        reals, real_rejects = decodable(reals, stage="train")
        fakes, fake_rejects = decodable(fakes, stage="train")
        rejects += real_rejects + fake_rejects
    if rejects:
        log.warning("%d validation image(s) cannot be decoded and are left out, e.g. %s: %s", len(rejects),
                    rejects[0]["path"], rejects[0]["reason"])
    reals = seeded_subset(reals, config.val_per_class, seed=config.seed, stream=0x7A1)
    fakes = seeded_subset(fakes, config.val_per_class, seed=config.seed, stream=0x7A2)
    if not reals or not fakes:
        raise DataError(f"no decodable validation {'reals' if not reals else 'fakes'} in "
                        f"{' + '.join(config.validation.paths()) or val_manifest}")
    listing = "\n".join(item.path for item in [*reals, *fakes]) if config.validation.unpaired else ""
    return [item.path for item in reals], [item.path for item in fakes], listing


@torch.inference_mode()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Balanced accuracy at logit 0 (the paper's early-stopping metric), AUC and AP on centre crops."""
    model.eval()
    scores, labels = [], []
    for images, batch_labels in loader:
        scores.append(model(images.to(device)).float().cpu())
        labels.append(batch_labels)
    metrics = detection_metrics(torch.cat(labels).numpy(), torch.cat(scores).numpy(), threshold=0.0)
    return {"val_bacc": metrics["bacc"], "val_auc": metrics["auc"], "val_ap": metrics["ap"]}


def train_detector(config: TrainConfig, *, train_manifest: Path, val_manifest: Path, model_dir: Path, live: Any,
                   ranks: Ranks = Ranks(), device: torch.device | None = None, retrain: Retrain | None = None,
                   autoencoder_dir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train, validating before the first epoch and after each; write best.pt and last.pt (rank 0).

    Starts from `retrain.model` when given, else from `train.init_from`'s weights, else a fresh detector.
    Resumes from model_dir/last.pt when it was written by the same params, data and start. best.pt is the best
    trained epoch (epoch 0, before any training, only seeds the schedule), except with init_from and
    max_epochs 0, where the loaded model is validated and written as it is. `autoencoder_dir`: the autoencoder
    a `roundtrip` input filter embeds. Returns (summary, one row per
    epoch: epoch, train_loss, lr, val_bacc, val_auc, val_ap)."""
    determinism.set_deterministic(config.deterministic)  # first: cuBLAS reads its setting at its first use
    device = device or pick_device(config.device)
    record = {"retrain": retrain.record} if retrain else {}
    val_reals, val_fakes, val_listing = validation_files(config, val_manifest=val_manifest)
    if retrain:
        model = retrain.model
    elif config.init_from:
        model, digest = initial_model(config.init_from, arch=config.arch, input_filter=config.input_filter,
                                      pretrained=config.pretrained)
        record["init_from_sha256"] = digest  # a changed file restarts rather than resumes
    else:
        model = create_detector(config.arch, pretrained=config.pretrained, seed=config.seed,
                                input_filter=config.input_filter, autoencoder=_embedded_autoencoder(config,
                                                                                                    autoencoder_dir))
        if config.pretrained == "imagenet":  # the verified file's full hash: provenance, and part of the fingerprint
            record["imagenet_sha256"] = model.imagenet_sha256
    fingerprint = config.fingerprint(train_manifest, val_manifest, record=record, extra=val_listing)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    determinism.seed_rank(config.seed, ranks.rank)  # same initial weights on every rank, its own dropout masks
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, betas=(config.beta1, config.beta2),
                                 weight_decay=config.weight_decay)
    train_mode = retrain.train_mode if retrain else _train_mode
    after_step = retrain.after_step if retrain else _no_projection
    schedule = EarlyStopping(config.patience, config.delta, config.lr_decay, config.min_lr)
    state = _resume_state(model_dir / "last.pt", fingerprint)
    if state:
        model.load_state_dict(read_checkpoint(model_dir / "last.pt")["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.best, schedule.countdown = state["schedule"]["best"], state["schedule"]["countdown"]
        determinism.resume_rng(state["rng"], device=device, seed=config.seed, rank=ranks.rank, world=ranks.world,
                               epoch=state["epoch"])  # dropout continues as if never interrupted (CUDA states too)
        log.info("resuming after epoch %d from %s", state["epoch"], model_dir / "last.pt")
    if ranks.world > 1:
        if device.type == "cuda":  # batch statistics over the global batch, as on one GPU (CPU/gloo: per rank)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    cache = _filter_cache(config, model, device, section="stay_positive" if retrain else "train")
    train_loader, sampler = make_train_loader(config, train_manifest, ranks, cache=cache)
    val_loader = DataLoader(ValidationItems(val_reals, val_fakes, crop_size=config.augment.crop_size,
                                            maps=cache.fill(val_reals + val_fakes) if cache else None),
                            batch_size=64, num_workers=config.workers)
    log.info("%s: %s parameters, %s %s train %s/epoch, validation %s real + %s fake, device %s, %d process(es)",
             config.arch, f"{count_parameters(model):,}", f"{len(train_loader.dataset):,}", config.pairing,
             "pairs" if config.sync else "images", f"{len(val_reals):,}", f"{len(val_fakes):,}", device, ranks.world)
    lr, history = (state["lr"], state["history"]) if state else (config.lr, [])
    best = state["best"] if state else {}
    for row in history:  # a resumed run logs the whole curve again (dvclive starts afresh)
        _log_epoch(live, row["epoch"], row["train_loss"], row["lr"], {k: row[k] for k in VAL_KEYS}, quiet=True)
    stop, started = bool(state and state["finished"]), time.perf_counter()
    epoch = state["epoch"] if state else -1
    with prefiltered_inputs(model) if cache else contextlib.nullcontext():
        while not stop and epoch < config.max_epochs:
            epoch += 1
            loss = _train_one_epoch(model, train_loader, sampler, optimizer, epoch, device, memory_format,
                                    autocast=config.mixed_precision and device.type == "cuda", train_mode=train_mode,
                                    after_step=after_step) \
                if epoch > 0 else float("nan")
            scores = validate(model, val_loader, device)  # every rank: identical weights, identical decisions
            # a retrain's epoch 0 is its zero-initialised start (a constant score): logged, never the best model
            selected = scores[f"val_{config.select_by}"]
            _, lr, stop = schedule.step(selected, lr) if epoch or not retrain else (False, lr, False)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if ranks.rank == 0:
                _log_epoch(live, epoch, loss, lr, scores)
            history.append({"epoch": epoch, "train_loss": loss, "lr": lr, **scores})
            # the untrained start is never best (as the original); with max_epochs 0 it is the model asked for
            trained = epoch > 0 or config.max_epochs == 0
            improved = trained and (not best or selected > best[f"val_{config.select_by}"] + config.delta)
            if improved:
                best = {"epoch": epoch, **scores}
            rng_states = determinism.gather_rng(device, ranks.world)  # every rank's, so each resumes its own draws
            if ranks.rank == 0:
                if improved:
                    save_checkpoint(model_dir / "best.pt", model, config=asdict(config) | record, epoch=epoch,
                                    metrics=scores)
                training_state = {"fingerprint": fingerprint, "epoch": epoch, "lr": lr, "best": best,
                                  "history": history, "schedule": schedule.state(), "optimizer": optimizer.state_dict(),
                                  "rng": rng_states, "finished": stop or epoch >= config.max_epochs}
                save_checkpoint(model_dir / "last.pt", model, config=asdict(config) | record, epoch=epoch,
                                metrics=scores, training_state=training_state)
    if stop:
        log.info("learning rate would fall below %g: stopped after epoch %d", config.min_lr, epoch)
    summary = {"epochs": epoch, "best_epoch": best["epoch"], "selected_by": config.select_by,
               "best_val_bacc": best["val_bacc"],
               "best_val_auc": best["val_auc"], "best_val_ap": best["val_ap"], "final_lr": lr,
               "train_seconds": time.perf_counter() - started}
    return summary, history


VAL_KEYS = ("val_bacc", "val_auc", "val_ap")
RECORD_KEYS = ("retrain", "init_from_sha256", "imagenet_sha256")  # written into a checkpoint's config beside params


def _embedded_autoencoder(config: TrainConfig, autoencoder_dir: Path | None) -> torch.nn.Module | None:
    """The autoencoder a `roundtrip` input filter holds (None for the other filters)."""
    if config.input_filter != "roundtrip":
        return None
    if autoencoder_dir is None:
        raise UserError("train.input_filter: roundtrip needs the autoencoder: run the train stage with "
                        "--autoencoder data/autoencoder (dvc.yaml does)")
    return load_autoencoder(autoencoder_dir, device=torch.device("cpu"))[0]


def _filter_cache(config: TrainConfig, model: torch.nn.Module, device: torch.device, *,
                  section: str) -> FilterCache | None:
    """A cache of the input filter's outputs when `filter_once` is set (after checking the augmentation allows it)."""
    if not config.filter_once:
        return None
    check_geometric(config.augment, section=section)
    return FilterCache(model, device=device)


def _resume_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The training state of an interrupted run with the same params and data, else None (start afresh)."""
    if not path.is_file():
        return None
    state = read_checkpoint(path).get("training_state")
    if not state or state.get("fingerprint") != fingerprint:
        log.info("%s is from other params or data: training from scratch", path)
        return None
    return state


def _train_mode(model: torch.nn.Module) -> None:
    model.train()


def _no_projection(model: torch.nn.Module) -> None:
    pass


def _train_one_epoch(model, loader, sampler, optimizer, epoch, device, memory_format, *, autocast: bool,
                     train_mode: Callable[[torch.nn.Module], None],
                     after_step: Callable[[torch.nn.Module], None]) -> float:
    train_mode(model)
    sampler.set_epoch(epoch)
    criterion = torch.nn.BCEWithLogitsLoss()
    losses = []
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    for images, labels in progress_bar(loader, desc=f"epoch {epoch}", unit="batch"):
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with precision:
            loss = criterion(model(images).float(), labels.float().to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        after_step(model)
        losses.append(loss.item())
    return float(np.mean(losses))


def _log_epoch(live: Any, epoch: int, loss: float, lr: float, scores: dict[str, float], *, quiet: bool = False) -> None:
    if not quiet:
        log.info("epoch %d: loss %.4f, lr %.1e, val bacc %.4f, auc %.4f, ap %.4f", epoch, loss, lr,
                 scores["val_bacc"], scores["val_auc"], scores["val_ap"])
    live.step = epoch
    if epoch > 0:
        live.log_metric("train_loss", loss)
    live.log_metric("lr", lr)
    for name, value in scores.items():
        live.log_metric(name, value)
    live.next_step()
