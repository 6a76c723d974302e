"""The original protocol: validate and calibrate on generated images that are not reconstructions, with the real `dvc`.

A tiny generated-image validation set (reals and fakes of unrelated content, in DMimageDetection's
`<generator>/0_real`, `<generator>/1_fake` layout) outside the project: training selects its best epoch on it,
the threshold is calibrated on it, and DVC re-runs both when one of its files changes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score
from torch.utils.data import DataLoader

from aligned_forensics.common.images import encode_jpeg, encode_png
from aligned_forensics.common.io import read_csv
from aligned_forensics.detector.checkpoints import load_detector, read_checkpoint
from aligned_forensics.detector.models import create_detector
from aligned_forensics.training.dataset import ValidationItems
from tests.conftest import TINY_PARAMS
from tests.projects import make_project, run

pytestmark = pytest.mark.slow


def generated_validation_set(root: Path) -> Path:
    """Two 'generators', each with 4 reals (noisy JPEG textures) and 4 fakes (smooth PNG blobs): unpaired."""
    rng = np.random.default_rng(7)
    for generator in ("ldm_a", "ldm_b"):
        for i in range(4):
            real = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            fake = np.clip(rng.normal(128, 20, (40, 48, 3)).cumsum(axis=1) / 8, 0, 255).astype(np.uint8)
            for kind, name, data in (("0_real", f"r{i}.jpg", encode_jpeg(real, quality=90)),
                                     ("1_fake", f"f{i}.png", encode_png(fake))):
                path = root / generator / kind / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """A project whose train and threshold validate on the generated set; `dvc repro` up to threshold@base."""
    validation = generated_validation_set(tmp_path_factory.mktemp("dmid") / "valid")
    params = copy.deepcopy(TINY_PARAMS)
    for section in ("train", "threshold"):
        params[section]["validation"] = {"root": str(validation)}
        params[section]["watch"] = str(validation)
    params["train"]["init_from"] = ""  # keys `dvc exp run -S` sets later must exist (as in params.yaml)
    params["evaluate"]["test_sets"] = [{"name": "test", "split": "test"}]
    folder = make_project(tmp_path_factory.mktemp("project"), params)
    run(["dvc", "repro", "threshold@base"], folder)
    return folder, validation


def test_the_threshold_is_calibrated_on_the_generated_set(project):
    folder, validation = project
    threshold = json.loads((folder / "metrics/info/threshold.json").read_text())
    assert (threshold["n_real"], threshold["n_fake"]) == (8, 8)
    scored = read_csv(folder / "data/threshold/scores.csv")
    assert {Path(row["path"]).parent.name for row in scored} == {"0_real", "1_fake"}
    assert all(Path(row["path"]).is_relative_to(validation) for row in scored)
    assert threshold["validation"] == str(validation)


def test_the_best_epoch_is_chosen_on_the_generated_set(project):
    """best.pt's recorded validation AP is the AP of best.pt on the generated set's centre crops."""
    folder, validation = project
    train = json.loads((folder / "metrics/info/train.json").read_text())
    model, payload = load_detector(folder / "data/model/best.pt", device=torch.device("cpu"))
    assert payload["epoch"] == train["best_epoch"] >= 1  # never the untrained epoch 0
    reals = sorted(str(p) for p in validation.rglob("0_real/*.jpg"))
    fakes = sorted(str(p) for p in validation.rglob("1_fake/*.png"))
    loader = DataLoader(ValidationItems(reals, fakes, crop_size=TINY_PARAMS["train"]["augment"]["crop_size"]),
                        batch_size=64)
    with torch.inference_mode():
        scores, labels = zip(*((model(images), batch_labels) for images, batch_labels in loader), strict=True)
    ap = average_precision_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    assert train["best_val_ap"] == pytest.approx(ap, abs=1e-4)


def test_changing_one_validation_file_makes_train_stale(project):
    folder, validation = project
    status = ["dvc", "status", "--with-deps", "--json", "threshold@base"]  # what the fixture reproduced
    assert json.loads(run(status, folder).stdout) == {}  # up to date first
    image = validation / "ldm_a" / "1_fake" / "f0.png"
    original = image.read_bytes()
    image.write_bytes(encode_png(np.zeros((40, 48, 3), dtype=np.uint8)))
    try:
        stale = json.loads(run(status, folder).stdout)
    finally:
        image.write_bytes(original)
    assert set(stale) == {"train", "threshold@base"}, stale
    assert str(validation) in json.dumps(stale["train"])  # its changed dependency: the outside folder itself
    assert json.loads(run(status, folder).stdout) == {}  # restored: nothing stale again


def test_the_watched_folder_is_hashed_by_dvc_itself(project):
    folder, validation = project
    lock = yaml.safe_load((folder / "dvc.lock").read_text())
    dep = next(dep for dep in lock["stages"]["train"]["deps"] if dep["path"] == str(validation))
    assert dep["md5"].endswith(".dir") and dep["nfiles"] == 16  # an external dependency with DVC's own md5


def test_the_readme_line_puts_a_released_checkpoint_through_a_benchmark(project, tmp_path):
    """docs/evaluation.md "The authors' checkpoints on the authors' benchmark": one `dvc exp run -S` line evaluates a
    released file (the original's {'model': module.-prefixed state dict} form) on a benchmark root, one set per
    generator."""
    folder, validation = project
    released = create_detector("res18", pretrained="none", seed=5)
    weights = validation.parent / "weights" / "release.pth"  # beside the validation set: one watch for both
    weights.parent.mkdir()
    torch.save({"model": {f"module.{k}": v for k, v in released.state_dict().items()}, "optimizer": {},
                "total_steps": 10}, weights)
    bench = tmp_path / "bench"
    rng = np.random.default_rng(3)
    for folder_name, count in (("real", 4), ("gen_a", 3), ("gen_b", 3)):
        for i in range(count):
            path = bench / folder_name / f"{folder_name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)))
    test_sets = f"[{{name: test, split: test}}, {{root: {bench}}}]"
    run(["dvc", "exp", "run", "-S", f"train.init_from={weights}", "-S", "train.max_epochs=0", "-S",
         f"train.watch={validation.parent}", "-S", f"evaluate.test_sets={test_sets}", "-S",
         f"evaluate.watch={bench}"], folder)
    best = read_checkpoint(folder / "data/model/best.pt")
    assert best["epoch"] == 0 and best["config"]["init_from"] == str(weights)
    for name, value in released.state_dict().items():
        assert torch.equal(best["state_dict"][name], value), name
    evaluation = json.loads((folder / "metrics/info/eval.json").read_text())
    assert sorted(evaluation["sets"]) == ["gen_a", "gen_b", "test"]
    assert {"eer", "pd_at_1pct_far", "pd_at_5pct_far", "pd_at_10pct_far"} <= set(evaluation)
    assert json.loads((folder / "metrics/info/threshold.json").read_text())["n_real"] == 8  # the generated set
