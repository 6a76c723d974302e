"""The training loop: same seed same curve, resume equals uninterrupted, ranks split batches exactly."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aligned_forensics.common.errors import ParamsError, UserError
from aligned_forensics.common.images import encode_jpeg, encode_png
from aligned_forensics.common.io import file_sha256, write_csv
from aligned_forensics.detector.checkpoints import load_detector, read_checkpoint, save_checkpoint
from aligned_forensics.detector.models import create_detector
from aligned_forensics.training import train as training
from aligned_forensics.training.augment import AugmentConfig
from aligned_forensics.training.dataset import EpochSampler
from aligned_forensics.training.train import TrainConfig, train_detector

CONFIG = TrainConfig(arch="res18", pretrained="none", seed=3, batch_size=4, max_epochs=3, patience=5, workers=0,
                     device="cpu", augment=AugmentConfig(crop_size=32))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, Path]:
    """12 train and 4 val pairs of 48 x 56 photos-like images (fakes: a blurred copy)."""
    folder = tmp_path_factory.mktemp("manifests")
    rng = np.random.default_rng(0)
    paths = {}
    for split, count in (("train", 12), ("val", 4)):
        rows = []
        for i in range(count):
            real = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
            fake = ((real.astype(np.int16) + np.roll(real, 1, axis=1)) // 2).astype(np.uint8)
            real_path, fake_path = folder / f"{split}{i}.jpg", folder / f"{split}{i}.png"
            real_path.write_bytes(encode_jpeg(real, quality=90))
            fake_path.write_bytes(encode_png(fake))
            rows.append({"stem": f"{split}{i}", "real_path": str(real_path), "fake_path": str(fake_path),
                         "width": 56, "height": 48})
        paths[f"{split}_manifest"] = folder / f"{split}.csv"
        write_csv(paths[f"{split}_manifest"], rows, ["stem", "real_path", "fake_path", "width", "height"])
    return paths


def silent_live() -> SimpleNamespace:
    return SimpleNamespace(step=0, log_metric=lambda *a, **k: None, next_step=lambda: None)


def train(manifests, model_dir: Path, config: TrainConfig = CONFIG):
    return train_detector(config, **manifests, model_dir=model_dir, live=silent_live())


def comparable(history: list[dict[str, float]]) -> list[dict[str, float | None]]:
    """NaN (the loss before any training) never equals itself; None does."""
    return [{k: None if v != v else v for k, v in row.items()} for row in history]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_same_seed_same_curve_other_seed_other_curve(manifests, tmp_path):
    _, first = train(manifests, tmp_path / "a")
    _, again = train(manifests, tmp_path / "b")
    _, other = train(manifests, tmp_path / "c", dataclasses.replace(CONFIG, seed=4))
    assert comparable(first) == comparable(again)
    assert [row["train_loss"] for row in first][1:] != [row["train_loss"] for row in other][1:]
    assert len(first) == 4  # validation before epoch 1, then after each of 3 epochs


def test_a_killed_run_resumes_to_the_uninterrupted_result(manifests, tmp_path, monkeypatch):
    summary, history = train(manifests, tmp_path / "whole")
    real_epoch = training._train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[4])
        if args[4] == 2:
            raise KeyboardInterrupt  # as if killed during epoch 2
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(manifests, tmp_path / "resumed")
    monkeypatch.setattr(training, "_train_one_epoch", real_epoch)
    resumed_summary, resumed_history = train(manifests, tmp_path / "resumed")
    assert comparable(resumed_history) == comparable(history)
    assert resumed_summary["best_epoch"] == summary["best_epoch"]
    for name, value in weights(tmp_path / "whole" / "last.pt").items():
        assert torch.equal(value, weights(tmp_path / "resumed" / "last.pt")[name]), name
    _, again = train(manifests, tmp_path / "resumed")  # finished: nothing left to train
    assert comparable(again) == comparable(history)


def test_changed_params_do_not_resume(manifests, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(manifests, tmp_path / "run")
    _, history = train(manifests, tmp_path / "run", dataclasses.replace(CONFIG, lr=2e-4))
    assert "from other params or data: training from scratch" in caplog.text and len(history) == 4


def test_ranks_together_see_exactly_the_one_process_batches():
    single = [i for _, i in EpochSampler(40, seed=1, shuffle=True)]
    ranks = [[i for _, i in EpochSampler(40, seed=1, shuffle=True, rank=r, world=2, chunk=4)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 20
    for step in range(5):  # global batch of 8 = rank 0's 4 then rank 1's 4
        assert single[step * 8:(step + 1) * 8] == ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4]
    assert len(EpochSampler(42, seed=1, shuffle=True, rank=1, world=2, chunk=4)) == 20  # incomplete batch dropped


def test_released_checkpoints_of_the_authors_load_for_evaluation(tmp_path):
    reference = create_detector("res18nodown", pretrained="none", seed=9)
    state = {f"module.{key}": value for key, value in reference.state_dict().items()}
    torch.save({"model": state, "optimizer": {}, "total_steps": 1234}, tmp_path / "model_epoch_best.pth")
    model, payload = load_detector(tmp_path / "model_epoch_best.pth", device=torch.device("cpu"), arch="res18nodown")
    assert payload["released"] and payload["total_steps"] == 1234 and "epoch" not in payload  # steps, not epochs
    assert payload["preprocessing"]["train_crop"] == 96 and payload["input_filter"] == "none"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), reference.eval()(x))
    with pytest.raises(UserError, match="does not fit a res50nodown detector"):
        load_detector(tmp_path / "model_epoch_best.pth", device=torch.device("cpu"))


@pytest.mark.parametrize("form", ["model", "state_dict", "net", "bare"])
@pytest.mark.parametrize("prefixed", [False, True])
def test_every_form_the_original_loader_accepts_loads_to_the_same_model(tmp_path, form, prefixed):
    reference = create_detector("res18nodown", pretrained="none", seed=5).eval()
    state = {f"module.{k}" if prefixed else k: v for k, v in reference.state_dict().items()}
    state["fc.weight" if not prefixed else "module.fc.weight"] = reference.fc.weight.detach().reshape(1, -1)
    torch.save(state if form == "bare" else {form: state}, tmp_path / "released.pth")
    model, payload = load_detector(tmp_path / "released.pth", device=torch.device("cpu"), arch="res18nodown")
    assert payload["released_form"] == (form if form != "bare" else "bare state dict")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), reference(x))


def test_a_file_in_no_known_form_names_the_keys_found(tmp_path):
    torch.save({"weights": {"a": torch.zeros(1)}, "step": 3}, tmp_path / "odd.pth")
    with pytest.raises(UserError, match=r"found \{'weights': dict, 'step': int\}"):
        load_detector(tmp_path / "odd.pth", device=torch.device("cpu"))


def test_a_file_that_records_its_arch_is_loaded_as_that(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model = create_detector("res18", pretrained="none", seed=1)
    save_checkpoint(tmp_path / "ours.pt", model, config={"augment": {"crop_size": 32}}, epoch=1, metrics={})
    loaded, payload = load_detector(tmp_path / "ours.pt", device=torch.device("cpu"), arch="res50nodown")
    assert loaded.arch == "res18" and "records arch res18" in caplog.text


def scripted_validation(monkeypatch, values: list[float]) -> list[tuple[str, int]]:
    """Validation returns `values` in turn (bacc, AUC and AP alike), training is skipped; returns the
    (file name, epoch) of every checkpoint written."""
    remaining = list(values)
    monkeypatch.setattr(training, "validate", lambda *a: dict.fromkeys(training.VAL_KEYS, remaining.pop(0)))
    monkeypatch.setattr(training, "_train_one_epoch", lambda *a, **k: 0.5)
    written, real_save = [], training.save_checkpoint

    def recording_save(path, model, **kwargs):
        written.append((Path(path).name, kwargs["epoch"]))
        real_save(path, model, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", recording_save)
    return written



def test_best_is_the_best_trained_epoch_never_the_untrained_start(manifests, tmp_path, monkeypatch):
    """Epoch 0 scores 0.9 (seeds the schedule) but is never best; epoch 1 is written although worse; epoch 2
    gains less than delta; epoch 3 gains more."""
    written = scripted_validation(monkeypatch, [0.9, 0.5, 0.5005, 0.6])
    summary, history = train(manifests, tmp_path / "m", dataclasses.replace(CONFIG, delta=0.001))
    assert [epoch for name, epoch in written if name == "best.pt"] == [1, 3]
    assert [epoch for name, epoch in written if name == "last.pt"] == [0, 1, 2, 3]
    assert summary["best_epoch"] == 3 and read_checkpoint(tmp_path / "m/best.pt")["epoch"] == 3
    assert len(history) == 4


def test_after_epoch_0_alone_there_is_no_best(manifests, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.9])
    monkeypatch.setattr(training, "_train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train(manifests, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["last.pt"]


@pytest.fixture
def released_start(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A res18 detector saved as the authors' training code saves one ({'model' with module. prefixes})."""
    source = create_detector("res18", pretrained="none", seed=42).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": state, "optimizer": {}, "total_steps": 123}, tmp_path / "release.pth")
    return tmp_path / "release.pth", source


def test_init_from_with_max_epochs_0_writes_the_loaded_model_as_best(manifests, tmp_path, released_start):
    path, source = released_start
    config = dataclasses.replace(CONFIG, init_from=str(path), max_epochs=0, watch=str(tmp_path))
    summary, history = train(manifests, tmp_path / "m", config)
    assert summary["best_epoch"] == 0 and len(history) == 1
    best = read_checkpoint(tmp_path / "m/best.pt")
    assert best["epoch"] == 0 and best["config"]["init_from"] == str(path)
    assert best["config"]["init_from_sha256"] == file_sha256(path)
    for name, value in source.state_dict().items():
        assert torch.equal(best["state_dict"][name], value), name
    assert (tmp_path / "m/last.pt").is_file()


def test_init_from_starts_training_from_the_file_and_restarts_when_it_changes(manifests, tmp_path, released_start,
                                                                              monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    path, source = released_start
    starts, real_epoch = [], training._train_one_epoch

    def recording_epoch(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_epoch(model, *args, **kwargs)

    monkeypatch.setattr(training, "_train_one_epoch", recording_epoch)
    config = dataclasses.replace(CONFIG, init_from=str(path), max_epochs=1, pretrained="imagenet",
                                 watch=str(tmp_path))
    summary, _ = train(manifests, tmp_path / "m", config)
    assert "train.pretrained imagenet is ignored" in caplog.text
    assert all(torch.equal(starts[0][name], value) for name, value in source.state_dict().items())
    assert summary["best_epoch"] == 1 and read_checkpoint(tmp_path / "m/best.pt")["epoch"] == 1
    other = create_detector("res18", pretrained="none", seed=43)
    torch.save(other.state_dict(), path)  # same path, other bytes: a bare state dict now
    caplog.clear()
    train(manifests, tmp_path / "m", config)
    assert "from other params or data: training from scratch" in caplog.text
    assert all(torch.equal(starts[1][name], value) for name, value in other.state_dict().items())


def test_init_from_of_another_recorded_arch_fails_with_the_fix(manifests, tmp_path):
    model = create_detector("res18nodown", pretrained="none", seed=1)
    save_checkpoint(tmp_path / "ours.pt", model, config={"augment": {"crop_size": 32}}, epoch=1, metrics={})
    with pytest.raises(UserError, match="is a res18nodown detector .* train.arch is res18: set `-S train.arch="):
        train(manifests, tmp_path / "m", dataclasses.replace(CONFIG, init_from=str(tmp_path / "ours.pt"),
                                                             watch=str(tmp_path)))


def test_max_epochs_0_needs_init_from():
    with pytest.raises(ParamsError, match="0 only with train.init_from"):
        dataclasses.replace(CONFIG, max_epochs=0)
