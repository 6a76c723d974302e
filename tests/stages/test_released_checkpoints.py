"""A res50nodown checkpoint in each of the four forms the authors' loader accepts goes through threshold,
evaluate, stay_positive and predict with the logits of the model it came from; train.init_from continues from one.

res50nodown is heavy on a CPU, so the images are 32 x 40 and there are few of them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aligned_forensics.common.images import decode_rgb, encode_jpeg, encode_png
from aligned_forensics.common.io import file_sha256, read_csv, write_csv
from aligned_forensics.detector.checkpoints import read_checkpoint
from aligned_forensics.detector.models import create_detector
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.evaluation.predict import main as predict_main
from tests.stages.conftest import stage_main

ARCH = "res50nodown"
FORMS = ("model", "state_dict", "net", "bare")
HEIGHT, WIDTH = 32, 40
COLUMNS = ("stem", "real_path", "fake_path", "width", "height")


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    """The model every released file is written from (random weights, a fixed seed). Its head is scaled down
    so that logits are of order 1, as a trained detector's: random ResNet features give logits near 14, where
    float32 rounding alone (batched or not) exceeds the 1e-5 compared."""
    model = create_detector(ARCH, pretrained="none", seed=7).eval()
    with torch.no_grad():
        model.fc.weight.mul_(0.05)
    return model


def save_released(model: torch.nn.Module, form: str, path: Path) -> Path:
    """`model` as the authors' code would have saved it, in one of the four forms its loader reads."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    if form == "model":  # their training checkpoint: DataParallel prefixes, the optimizer, a step count
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "total_steps": 123}, path)
    else:
        torch.save(state if form == "bare" else {form: state}, path)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, source) -> Path:
    """Images, manifests (val: 1 pair, test: 2 pairs, train: 1 pair), params and the four released files."""
    folder = tmp_path_factory.mktemp("released")
    rng = np.random.default_rng(0)
    rows: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for split, count in (("train", 1), ("val", 1), ("test", 2)):
        for i in range(count):
            real = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            fake = ((real.astype(np.int16) + np.roll(real, 1, axis=0)) // 2).astype(np.uint8)
            real_path, fake_path = folder / "images" / f"{split}{i}.jpg", folder / "images" / f"{split}{i}.png"
            real_path.parent.mkdir(exist_ok=True)
            real_path.write_bytes(encode_jpeg(real, quality=90))
            fake_path.write_bytes(encode_png(fake))
            rows[split].append({"stem": f"{split}{i}", "real_path": str(real_path), "fake_path": str(fake_path),
                                "width": WIDTH, "height": HEIGHT})
    for split, split_rows in rows.items():
        write_csv(folder / "manifest" / f"{split}.csv", split_rows, COLUMNS)
    params = {
        "threshold": {"n_per_class": 10, "seed": 0, "criterion": "bacc", "device": "cpu",
                      "scoring": {"protocol": "full", "batch_size": 4}},
        "evaluate": {"device": "cpu", "scoring": {"protocol": "full", "batch_size": 4},
                     "test_sets": [{"name": "test", "split": "test"}],
                     "sweeps": {"test_set": "test", "resize_square": [24]}},
        "stay_positive": {"seed": 14, "sync": True, "batch_size": 1, "max_epochs": 1, "patience": 1,
                          "workers": 0, "device": "cpu", "channels_last": False},
        "train": {"arch": ARCH, "pretrained": "none", "seed": 17, "batch_size": 1, "max_epochs": 0, "patience": 1,
                  "workers": 0, "device": "cpu", "channels_last": False, "augment": {"crop_size": 32}},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for form in FORMS:
        save_released(source, form, folder / f"{form}.pth")
    return folder


def source_logits(model: torch.nn.Module, paths: list[str]) -> dict[str, float]:
    """What the model itself says of each whole image, one at a time."""
    with torch.inference_mode():
        return {path: float(model(to_normalised_tensor(decode_rgb(Path(path)))[None])[0]) for path in paths}


def assert_same_logits(rows: list[dict[str, str]], model: torch.nn.Module, *, count: int) -> None:
    assert len(rows) == count
    expected = source_logits(model, [row["path"] for row in rows])
    for row in rows:
        assert abs(float(row["logit"]) - expected[row["path"]]) <= 1e-5, row["path"]


@pytest.mark.parametrize("form", FORMS)
def test_each_released_form_goes_through_threshold_evaluate_predict_and_stay_positive(
        project, source, form, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)  # every stage writes its default outputs here
    released, params = project / f"{form}.pth", ["--params", str(project / "params.yaml")]

    assert stage_main("threshold")([*params, "--model", str(released), "--manifest", str(project / "manifest/val.csv"),
                                    "--arch", ARCH]) == 0
    assert_same_logits(read_csv(Path("data/threshold/scores.csv")), source, count=2)
    record = json.loads(Path("metrics/info/threshold.json").read_text())
    assert record["model_sha256"] == file_sha256(released)

    assert stage_main("evaluate")([*params, "--model", str(released), "--manifest", str(project / "manifest"),
                                   "--arch", ARCH]) == 0
    assert_same_logits(read_csv(Path("data/evaluate/test/scores.csv")), source, count=4)
    sweeps = json.loads(Path("metrics/eval/sweeps.json").read_text())
    assert set(sweeps) == {"resize_square-24"} and sweeps["resize_square-24"]["n_real"] == 2
    assert json.loads(Path("metrics/eval/sweeps/resize_square.json").read_text())[0]["level"] == 24
    assert Path("metrics/eval/sweeps.png").stat().st_size > 0

    images = [row["real_path"] for row in read_csv(project / "manifest/test.csv")]
    assert predict_main([*images, "--model", str(released), "--arch", ARCH, "--out", "predict.csv"]) == 0
    assert_same_logits(read_csv(Path("predict.csv")), source, count=2)
    assert "from metrics/threshold.json (calibrated for this model)" in caplog.text  # its digest matches
    assert predict_main([*images, "--model", "data/bundle/detector.pt", "--out", "bundle.csv"]) == 0
    assert_same_logits(read_csv(Path("bundle.csv")), source, count=2)
    assert "data/bundle/detector.pt (calibrated)" in caplog.text
    capsys.readouterr()

    assert stage_main("stay_positive")([*params, "--model", str(released), "--manifest", str(project / "manifest"),
                                        "--arch", ARCH]) == 0
    retrained = read_checkpoint(Path("data/stay_positive/model/best.pt"))
    assert retrained["arch"] == ARCH and retrained["config"]["retrain"]["from_sha256"] == file_sha256(released)
    for name, value in source.state_dict().items():  # the backbone is the released model's, untouched
        if not name.startswith("fc."):
            assert torch.equal(retrained["state_dict"][name], value), name
    summary = json.loads(Path("metrics/stay_positive/weights/summary.json").read_text())
    assert summary["base_bias"] == pytest.approx(float(source.fc.bias.detach()), abs=1e-6)
    assert summary["base_negative"] == int((source.fc.weight.detach() < 0).sum())


def test_a_threshold_file_of_another_model_is_not_used(project, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)
    images = [row["real_path"] for row in read_csv(project / "manifest/val.csv")]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"threshold": 5.0, "model_sha256": "ab" * 32}))
    assert predict_main([*images, "--model", str(project / "net.pth"), "--threshold", str(other)]) == 0
    assert f"{other} belongs to another model (sha256 abababababab" in caplog.text and "using logit 0" in caplog.text
    anonymous = tmp_path / "anonymous.json"
    anonymous.write_text(json.dumps({"threshold": 5.0}))
    assert predict_main([*images, "--model", str(project / "net.pth"), "--threshold", str(anonymous)]) == 0
    assert "does not name the model it was calibrated for" in caplog.text
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if not line.startswith("path\t")]
    assert len(rows) == 2 and all(called == ("fake" if float(logit) > 0 else "real") for _, logit, _, called in rows)


def test_train_init_from_a_released_checkpoint_evaluates_it_or_continues_from_it(project, source, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    released = project / "model.pth"
    params = yaml.safe_load((project / "params.yaml").read_text())
    runs = {}
    for epochs in (0, 1):
        params["train"] |= {"init_from": str(released), "max_epochs": epochs, "watch": str(released.parent)}
        (tmp_path / f"params{epochs}.yaml").write_text(yaml.safe_dump(params))
        assert stage_main("train")(["--params", str(tmp_path / f"params{epochs}.yaml"), "--manifest",
                                    str(project / "manifest"), "--out", f"model{epochs}", "--live",
                                    f"live{epochs}", "--metrics", f"train{epochs}.json"]) == 0
        runs[epochs] = {name: read_checkpoint(Path(f"model{epochs}/{name}")) for name in ("best.pt", "last.pt")}
        assert runs[epochs]["best.pt"]["config"]["init_from_sha256"] == file_sha256(released)
    as_is = runs[0]["best.pt"]
    assert as_is["epoch"] == 0 and "released" not in as_is  # our format now, ready for threshold and evaluate
    for name, value in source.state_dict().items():
        assert torch.equal(as_is["state_dict"][name], value), name
    continued = runs[1]["last.pt"]["training_state"]["history"]
    validated = runs[0]["last.pt"]["training_state"]["history"]
    assert [continued[0][key] for key in ("val_bacc", "val_auc", "val_ap")] == \
        [validated[0][key] for key in ("val_bacc", "val_auc", "val_ap")]  # epoch 0 of both: the released weights
    assert runs[1]["best.pt"]["epoch"] == 1
    assert not torch.equal(runs[1]["best.pt"]["state_dict"]["fc.weight"], source.fc.weight.detach())
