"""GPU-exact training: random states through last.pt (CUDA ones too), per-rank dropout, the deterministic switch."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aligned_forensics.detector.checkpoints import read_checkpoint
from aligned_forensics.detector.models import create_detector
from aligned_forensics.training import determinism
from aligned_forensics.training import train as training
from aligned_forensics.training.augment import AugmentConfig, draw_augmentation
from aligned_forensics.training.dataset import EpochSampler
from aligned_forensics.training.train import Ranks, Retrain, TrainConfig, make_train_loader, train_detector
from tests.unit.test_training_loop import comparable, manifests, silent_live  # noqa: F401 (a fixture)

CONFIG = TrainConfig(arch="res18nodown", pretrained="none", seed=3, batch_size=4, max_epochs=2, patience=5,
                     workers=0, device="cpu", augment=AugmentConfig(crop_size=16))  # res18nodown: dropout 0.5
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def default_algorithms():
    """Each test starts and ends with torch's defaults and the process's own cuBLAS setting (all process-wide)."""
    saved = os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    yield
    determinism.set_deterministic(False)
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    if saved is not None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved


def test_cpu_state_round_trips_and_no_cuda_state_is_taken_off_cuda():
    state = determinism.capture_rng(torch.device("cpu"))
    assert state["cuda"] == []  # a CPU run's last.pt never depends on whether the machine has a GPU
    first = torch.rand(5)
    determinism.restore_rng(state, torch.device("cpu"))
    assert torch.equal(torch.rand(5), first)


def test_cuda_states_are_captured_and_restored_per_gpu(monkeypatch):
    """The CUDA half of capture/restore, with two fake GPUs standing in for torch.cuda."""
    gpus = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in gpus])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.__setitem__(index, state))
    state = determinism.capture_rng(torch.device("cuda", 0))
    assert [s.tolist() for s in state["cuda"]] == [[1, 2], [3, 4]]
    determinism.restore_rng(state, torch.device("cuda", 0))
    assert {i: s.tolist() for i, s in restored.items()} == {0: [1, 2], 1: [3, 4]}
    restored.clear()
    determinism.restore_rng(state, torch.device("cpu"))  # a CPU resume leaves the GPUs alone
    assert restored == {}


def killed_in_epoch_2_then_resumed(config, paths, folder, monkeypatch) -> list[dict]:
    """Train until a kill during epoch 2, then again from its last.pt; the resumed run's history."""
    real_epoch = training._train_one_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if args[4] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "_train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_detector(config, **paths, model_dir=folder, live=silent_live())
    monkeypatch.setattr(training, "_train_one_epoch", real_epoch)
    return train_detector(config, **paths, model_dir=folder, live=silent_live())[1]


def test_last_pt_holds_each_ranks_state_and_a_resume_restores_it(manifests, tmp_path, monkeypatch):  # noqa: F811
    _, history = train_detector(CONFIG, **manifests, model_dir=tmp_path / "whole", live=silent_live())
    saved = read_checkpoint(tmp_path / "whole" / "last.pt")["training_state"]["rng"]
    assert len(saved) == 1 and saved[0]["cuda"] == [] and torch.equal(saved[0]["cpu"], torch.get_rng_state())
    resumed = killed_in_epoch_2_then_resumed(CONFIG, manifests, tmp_path / "resumed", monkeypatch)
    assert comparable(resumed) == comparable(history)  # dropout 0.5: a lost state would change epoch 2


def test_a_checkpoint_of_another_world_size_reseeds_each_rank_apart(caplog):
    states = [determinism.capture_rng(torch.device("cpu"))]
    draws = []
    for rank in (0, 1):
        determinism.resume_rng(states, device=torch.device("cpu"), seed=3, rank=rank, world=2, epoch=4)
        draws.append(torch.rand(8))
    assert not torch.equal(draws[0], draws[1]) and "reseeded per rank" in caplog.text


def test_deterministic_switch_sets_cudnn_cublas_and_torch_flags_and_trains_on_cpu(manifests, tmp_path):  # noqa: F811
    determinism.set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    determinism.set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    config = dataclasses.replace(CONFIG, max_epochs=1)
    _, plain = train_detector(config, **manifests, model_dir=tmp_path / "plain", live=silent_live())
    _, exact = train_detector(dataclasses.replace(config, deterministic=True), **manifests,
                              model_dir=tmp_path / "exact", live=silent_live())
    assert torch.are_deterministic_algorithms_enabled()  # the run switched it on (and no op refused)
    assert comparable(exact) == comparable(plain)  # the CPU kernels were deterministic already


def test_ranks_get_their_own_seeds_loader_generators_and_augmentation_draws(manifests):  # noqa: F811
    assert determinism.rank_seed(3, 0, determinism.DROPOUT_STREAM) != determinism.rank_seed(3, 1,
                                                                                            determinism.DROPOUT_STREAM)
    world = dataclasses.replace(CONFIG, workers=1)
    loaders = [make_train_loader(world, manifests["train_manifest"], Ranks(rank, 2))[0] for rank in (0, 1)]
    worker_seeds = [torch.empty((), dtype=torch.int64).random_(generator=loader.generator).item()
                    for loader in loaders]  # what DataLoader draws for its workers' base seed
    assert worker_seeds[0] != worker_seeds[1]
    # augmentation is drawn from (seed, epoch, global index): the ranks' disjoint indices give different draws
    keys = [list(EpochSampler(12, seed=3, shuffle=True, rank=rank, world=2, chunk=2)) for rank in (0, 1)]
    assert not set(keys[0]) & set(keys[1])
    draws = [[draw_augmentation(AugmentConfig(), np.random.default_rng([3, *key])) for key in rank_keys]
             for rank_keys in keys]
    assert all(a != b for a, b in zip(draws[0], draws[1], strict=True))


def _dropout_masks(rank: int, init_file: str, paths: dict[str, str], out: str) -> None:
    """One gloo rank: train one epoch of res18nodown through train_detector, save its first dropout mask."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = create_detector("res18nodown", pretrained="none", seed=CONFIG.seed)
    weights = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    masks = []

    def record(module, inputs, output):
        if module.training:
            masks.append((output != 0, inputs[0] != 0))  # (B, 512) kept by dropout, where it could tell

    model.dropout.register_forward_hook(record)
    retrain = Retrain(model=model, record={"test": "dropout"}, train_mode=lambda m: m.train(),
                      after_step=lambda m: None)
    train_detector(dataclasses.replace(CONFIG, max_epochs=1), **{k: Path(v) for k, v in paths.items()},
                   model_dir=Path(out) / f"model-{rank}", live=silent_live(), ranks=Ranks(rank, 2), retrain=retrain)
    torch.save({"kept": masks[0][0], "nonzero": masks[0][1], "weights": weights}, Path(out) / f"mask-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_ranks_draw_different_dropout_masks(manifests, tmp_path):  # noqa: F811
    paths = {key: str(value) for key, value in manifests.items()}
    mp.spawn(_dropout_masks, args=(str(tmp_path / "rendezvous"), paths, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"mask-{rank}.pt", weights_only=True) for rank in (0, 1))
    assert first["weights"] == second["weights"]  # the model is still built from the seed alone
    # dropout zeroes a feature that is already 0 invisibly: compare where both ranks' features are non-zero
    visible = first["nonzero"] & second["nonzero"]
    assert visible.float().mean() > 0.5 and first["kept"][visible].any() and not first["kept"][visible].all()
    assert not torch.equal(first["kept"][visible], second["kept"][visible])  # one seed for all ranks: equal


@CUDA
def test_cuda_rng_states_round_trip_through_last_pt(manifests, tmp_path, monkeypatch):  # noqa: F811
    config = dataclasses.replace(CONFIG, device="cuda", deterministic=True)
    _, history = train_detector(config, **manifests, model_dir=tmp_path / "whole", live=silent_live())
    saved = read_checkpoint(tmp_path / "whole" / "last.pt")["training_state"]["rng"][0]
    assert len(saved["cuda"]) == torch.cuda.device_count()
    assert all(torch.equal(a, b) for a, b in zip(saved["cuda"], torch.cuda.get_rng_state_all(), strict=True))
    determinism.restore_rng(saved, torch.device("cuda"))
    first = torch.rand(16, device="cuda")
    determinism.restore_rng(saved, torch.device("cuda"))
    assert torch.equal(torch.rand(16, device="cuda"), first)
    resumed = killed_in_epoch_2_then_resumed(config, manifests, tmp_path / "resumed", monkeypatch)
    assert comparable(resumed) == comparable(history)  # CUDA dropout continued exactly where it stopped
