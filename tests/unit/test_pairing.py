"""train.pairing: unaligned batches never meet their own reals, stay deterministic, shard and resume like aligned."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from aligned_forensics.common.cli import load_config
from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.images import encode_jpeg, encode_png
from aligned_forensics.common.io import write_csv
from aligned_forensics.common.sampling import seeded_subset
from aligned_forensics.detector.checkpoints import read_checkpoint
from aligned_forensics.training.augment import AugmentConfig
from aligned_forensics.training.dataset import FAKE, REAL, UnalignedPairs, load_pairs
from aligned_forensics.training.stay_positive import StayPositiveConfig, train_stay_positive
from aligned_forensics.training.train import Ranks, TrainConfig, make_train_loader, train_detector

CONFIG = TrainConfig(arch="res18", pretrained="none", seed=3, batch_size=2, max_epochs=2, patience=5, workers=0,
                     device="cpu", pairing="unaligned", augment=AugmentConfig(crop_size=16))
Source = tuple[str, int]  # (stem, label) of one image a batch loads


def write_manifest(folder: Path, split: str, count: int, *, side: int = 24) -> Path:
    """`count` pairs named {split}{i}: a JPEG real and a PNG fake (a blurred copy) with the same stem."""
    rng = np.random.default_rng(len(split) * 1000 + count)
    rows = []
    for i in range(count):
        real = rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8)
        fake = ((real.astype(np.int16) + np.roll(real, 1, axis=1)) // 2).astype(np.uint8)
        real_path, fake_path = folder / f"{split}{i}.jpg", folder / f"{split}{i}.png"
        real_path.write_bytes(encode_jpeg(real, quality=90))
        fake_path.write_bytes(encode_png(fake))
        rows.append({"stem": f"{split}{i}", "real_path": str(real_path), "fake_path": str(fake_path),
                     "width": side + 8, "height": side})
    write_csv(folder / f"{split}.csv", rows, ["stem", "real_path", "fake_path", "width", "height"])
    return folder / f"{split}.csv"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, Path]:
    """13 train pairs (odd: one is left out of the unaligned halves) and 4 val pairs."""
    folder = tmp_path_factory.mktemp("pairing")
    return {"train_manifest": write_manifest(folder, "train", 13), "val_manifest": write_manifest(folder, "val", 4)}


def batch_sources(dataset, keys: list[tuple[int, int]]) -> list[Source]:
    """What a batch of sampler keys loads, read through the dataset's own lookups (not the pixels)."""
    if isinstance(dataset, UnalignedPairs):
        couples = [dataset.paths(key) for key in keys]
    elif hasattr(dataset, "pairs"):  # aligned SyncedPairs: a real and its own reconstruction
        couples = [dataset.pairs[i] for _, i in keys]
    else:  # IndependentItems: one labelled image per key
        return [(Path(dataset.items[i][0]).stem, dataset.items[i][1]) for _, i in keys]
    return [(Path(path).stem, label) for couple in couples for path, label in zip(couple, (REAL, FAKE), strict=True)]


def epoch_batches(config: TrainConfig, manifest: Path, epoch: int, ranks: Ranks | None = None) -> list[list[Source]]:
    """Every batch of one epoch, as the loader's batch sampler hands its keys to the dataset.

    An unaligned synced batch reads (real, fake) per key: its sources alternate real, fake."""
    loader, sampler = make_train_loader(config, manifest, ranks or Ranks())
    sampler.set_epoch(epoch)
    return [batch_sources(loader.dataset, keys) for keys in loader.batch_sampler]


def stems(batch: list[Source], label: int) -> set[str]:
    return {stem for stem, kind in batch if kind == label}


@pytest.mark.parametrize("sync", [True, False])
def test_unaligned_reals_and_fakes_come_from_disjoint_photos(manifests, sync):
    config = dataclasses.replace(CONFIG, sync=sync)
    seen_reals, seen_fakes = set(), set()
    for epoch in (1, 2):
        batches = epoch_batches(config, manifests["train_manifest"], epoch)
        reals, fakes = set(), set()
        for batch in batches:
            assert not stems(batch, REAL) & stems(batch, FAKE)
            if sync:  # batch_size reals then batch_size fakes (the last batch may be short)
                assert [label for _, label in batch].count(REAL) == [label for _, label in batch].count(FAKE)
            reals |= stems(batch, REAL)
            fakes |= stems(batch, FAKE)
        assert not reals & fakes and len(reals) == len(fakes) == 6  # 13 pairs: two halves of 6, one left out
        assert sum(len(batch) for batch in batches) == 12
        seen_reals |= reals
        seen_fakes |= fakes
    assert not seen_reals & seen_fakes  # the halves stay fixed for the whole run


def test_aligned_batches_still_hold_each_real_with_its_reconstruction(manifests):
    aligned = dataclasses.replace(CONFIG, pairing="aligned")
    for batch in epoch_batches(aligned, manifests["train_manifest"], 1):
        assert stems(batch, REAL) == stems(batch, FAKE)
    reals = set().union(*(stems(b, REAL) for b in epoch_batches(dataclasses.replace(aligned, sync=False),
                                                                 manifests["train_manifest"], 1)))
    assert len(reals) == 13


def test_unaligned_fakes_get_new_partners_each_epoch(manifests):
    first, second = (epoch_batches(CONFIG, manifests["train_manifest"], epoch) for epoch in (1, 2))
    partners = [{(real[0], fake[0]) for b in batches for real, fake in zip(b[::2], b[1::2], strict=True)}
                for batches in (first, second)]
    assert partners[0] != partners[1]


def test_data_cap_picks_the_pairs_before_the_split(manifests):
    config = dataclasses.replace(CONFIG, data_cap=6)
    capped = {Path(real).stem for real, _ in seeded_subset(load_pairs(manifests["train_manifest"]), 6, seed=3,
                                                            stream=0xCA9)}
    batches = epoch_batches(config, manifests["train_manifest"], 1)
    reals = set().union(*(stems(b, REAL) for b in batches))
    fakes = set().union(*(stems(b, FAKE) for b in batches))
    assert len(reals) == len(fakes) == 3 and not reals & fakes and reals | fakes == capped


def test_same_seed_same_batches_other_seed_other_split(manifests):
    tensors = []
    for _ in range(2):
        loader, sampler = make_train_loader(CONFIG, manifests["train_manifest"])
        sampler.set_epoch(1)
        tensors.append([(images, labels) for images, labels in loader])
    assert len(tensors[0]) == 3 and tensors[0][0][0].shape == (4, 3, 16, 16)  # 2 reals + 2 fakes
    for (images, labels), (again, again_labels) in zip(*tensors, strict=True):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)
    other = epoch_batches(dataclasses.replace(CONFIG, seed=4), manifests["train_manifest"], 1)
    mine = epoch_batches(CONFIG, manifests["train_manifest"], 1)
    assert set().union(*(stems(b, REAL) for b in other)) != set().union(*(stems(b, REAL) for b in mine))


@pytest.mark.parametrize("sync", [True, False])
def test_ranks_together_load_exactly_the_one_process_batches(manifests, sync):
    config = dataclasses.replace(CONFIG, sync=sync, batch_size=4)
    single = epoch_batches(config, manifests["train_manifest"], 1)
    ranks = [epoch_batches(config, manifests["train_manifest"], 1, Ranks(rank, 2)) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) >= 1
    for step, (first, second) in enumerate(zip(*ranks, strict=True)):
        if sync:  # each rank holds its 2 reals then their 2 partners; one process: 4 reals then 4 fakes
            assert sorted(first + second) == sorted(single[step])
        else:
            assert first + second == single[step]


def test_pairing_is_part_of_the_fingerprint_and_checked_at_start_up(manifests, repo_root, tmp_path):
    aligned = dataclasses.replace(CONFIG, pairing="aligned")
    assert CONFIG.fingerprint(*manifests.values()) != aligned.fingerprint(*manifests.values())
    with pytest.raises(ParamsError, match=r"'train\.pairing'.*'aligned', 'unaligned'"):
        TrainConfig(pairing="shuffled")
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    for section, cls in (("train", TrainConfig), ("stay_positive", StayPositiveConfig)):
        assert load_config(repo_root / "params.yaml", section, cls).pairing == "aligned"
        document[section]["pairing"] = "shuffled"
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(document))
        with pytest.raises(ParamsError, match=rf"'{section}\.pairing'.*'aligned', 'unaligned'"):
            load_config(tmp_path / "params.yaml", section, cls)


def test_unaligned_needs_two_pairs(tmp_path):
    with pytest.raises(DataError, match="pairing 'unaligned' needs at least 2 train pairs"):
        make_train_loader(CONFIG, write_manifest(tmp_path, "train", 1))


def silent_live() -> SimpleNamespace:
    return SimpleNamespace(step=0, log_metric=lambda *a, **k: None, next_step=lambda: None)


def test_a_tiny_unaligned_run_trains_records_and_resumes_only_its_own_mode(manifests, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model_dir = tmp_path / "model"
    summary, history = train_detector(CONFIG, **manifests, model_dir=model_dir, live=silent_live())
    assert len(history) == 3 and all(np.isfinite(row["train_loss"]) for row in history[1:])
    assert read_checkpoint(model_dir / "last.pt")["config"]["pairing"] == "unaligned"
    assert read_checkpoint(model_dir / "best.pt")["config"]["pairing"] == "unaligned"
    _, again = train_detector(CONFIG, **manifests, model_dir=model_dir, live=silent_live())  # finished: resumed
    assert [row["epoch"] for row in again] == [0, 1, 2] and "from other params" not in caplog.text

    retrain = StayPositiveConfig(batch_size=4, max_epochs=1, workers=0, device="cpu")  # pairing: aligned
    train_stay_positive(retrain, model_path=model_dir / "best.pt", **manifests, model_dir=tmp_path / "positive",
                        live=silent_live())
    assert "was trained with pairing unaligned; stay_positive.pairing aligned" in caplog.text
    assert read_checkpoint(tmp_path / "positive" / "last.pt")["config"]["pairing"] == "aligned"

    aligned = dataclasses.replace(CONFIG, pairing="aligned", max_epochs=1)
    train_detector(aligned, **manifests, model_dir=model_dir, live=silent_live())
    assert "from other params or data: training from scratch" in caplog.text  # never a mixed-mode resume
    assert read_checkpoint(model_dir / "last.pt")["config"]["pairing"] == "aligned"
