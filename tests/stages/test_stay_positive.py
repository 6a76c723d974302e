"""The stay_positive stage on the tiny workspace: the guarantees of Stay-Positive, on the trained model."""

from __future__ import annotations

import json

import pytest
import torch

from aligned_forensics.detector.checkpoints import load_detector, read_checkpoint
from aligned_forensics.training.dataset import ValidationItems, load_pairs
from tests.stages.conftest import stage_main

CPU = torch.device("cpu")


def models(workspace, out: str = "data/stay_positive/model"):
    base = load_detector(workspace / "data/model/best.pt", device=CPU)[0]
    return base, load_detector(workspace / out / "best.pt", device=CPU)[0]


def test_every_final_layer_weight_is_non_negative_and_some_are_positive(workspace):
    for name in ("best.pt", "last.pt"):
        weight = read_checkpoint(workspace / "data/stay_positive/model" / name)["state_dict"]["fc.weight"]
        assert (weight >= 0).all() and (weight > 0).any(), name


def test_backbone_parameters_and_batch_norm_buffers_are_bit_identical(workspace):
    base = read_checkpoint(workspace / "data/model/best.pt")["state_dict"]
    positive = read_checkpoint(workspace / "data/stay_positive/model/best.pt")["state_dict"]
    assert base.keys() == positive.keys()
    backbone = [key for key in base if not key.startswith("fc.")]
    assert any("running_mean" in key for key in backbone) and any("num_batches_tracked" in key for key in backbone)
    for key in backbone:
        assert torch.equal(base[key], positive[key]), key
    assert not torch.equal(base["fc.weight"], positive["fc.weight"])


def test_with_zero_features_the_score_is_the_bias(workspace):
    _, model = models(workspace)
    zeros = torch.zeros(3, model.fc.in_features)
    assert torch.equal(model.head(zeros), model.fc.bias.expand(3))


def test_increasing_any_feature_never_lowers_the_score(workspace, monkeypatch):
    monkeypatch.chdir(workspace)  # manifest paths are relative to the project
    _, model = models(workspace)
    model = model.double()  # float64 and one batch per comparison: rounding cannot fake a decrease
    pairs = load_pairs(workspace / "data/manifest/val.csv")
    items = ValidationItems([real for real, _ in pairs], [fake for _, fake in pairs], crop_size=32)
    images = torch.stack([items[i][0] for i in range(8)]).double()
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        features = model.pooled(images)  # (8, C), >= 0
        assert (features >= 0).all()
        for row in features:
            count = row.numel()
            one_at_a_time = row + torch.eye(count, dtype=row.dtype) * torch.rand(count, generator=generator)  # (C, C)
            many = row + torch.rand(64, count, generator=generator) * (torch.rand(64, count, generator=generator) < .2)
            scores = model.head(torch.cat([row[None], one_at_a_time, many.double()]))
            assert (scores[1:] >= scores[0] - 1e-12).all()
            assert (scores[1:] > scores[0]).any()  # the positive weights do raise it


def test_inspection_matches_the_checkpoint_and_the_report_compares_both_models(workspace):
    _, model = models(workspace)
    weights = model.fc.weight.detach().reshape(-1)
    summary = json.loads((workspace / "metrics/stay_positive/weights/summary.json").read_text())
    assert summary["positive"] == int((weights > 0).sum()) and summary["zero"] == int((weights == 0).sum())
    assert summary["positive"] + summary["zero"] == summary["features"] == 512 and summary["negative"] == 0
    top = json.loads((workspace / "metrics/stay_positive/weights/top.json").read_text())
    assert len(top) == 20 and [row["weight"] for row in top] == sorted((row["weight"] for row in top), reverse=True)
    assert top[0]["weight"] == round(float(weights.max()), 6) and weights[top[0]["feature"]] == weights.max()
    assert (workspace / "metrics/stay_positive/weights/weights.png").read_bytes()[:4] == b"\x89PNG"
    base_eval = json.loads((workspace / "metrics/info/eval.json").read_text())
    positive_eval = json.loads((workspace / "metrics/stay_positive/info/eval.json").read_text())
    positive_threshold = json.loads((workspace / "metrics/stay_positive/info/threshold.json").read_text())
    assert positive_eval["threshold"] == positive_threshold["threshold"]
    report = (workspace / "report/report.md").read_text()
    assert "## Stay-Positive" in report
    assert f"{base_eval['ap']:.4f} → {positive_eval['ap']:.4f}" in report
    for link in ("stay_positive/weights/weights.png", "stay_positive/train/curves.png",
                 "stay_positive/eval/curves/test.png"):
        assert f"](../metrics/{link})" in report and (workspace / "report" / "../metrics" / link).is_file()
    bundle = read_checkpoint(workspace / "data/stay_positive/bundle/detector.pt")
    assert bundle["threshold"]["threshold"] == pytest.approx(positive_threshold["threshold"], abs=5e-7)  # JSON: 6
    assert bundle["config"]["retrain"]["unfreeze_last_blocks"] == 0


def test_unfreezing_the_last_block_changes_only_it_and_the_final_layer(workspace, tmp_path, monkeypatch):
    import yaml

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["stay_positive"] |= {"unfreeze_last_blocks": 1, "max_epochs": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(workspace)
    out = tmp_path / "model"
    assert stage_main("stay_positive")(["--params", str(tmp_path / "params.yaml"), "--out", str(out), "--live",
                                        str(tmp_path / "live"), "--weights", str(tmp_path / "weights")]) == 0
    base = read_checkpoint(workspace / "data/model/best.pt")["state_dict"]
    positive = read_checkpoint(out / "last.pt")["state_dict"]
    changed = {key for key in base if not torch.equal(base[key], positive[key])}
    assert changed and all(key.startswith(("layer4.1.", "fc.")) for key in changed), changed
    assert any(key.startswith("layer4.1.") and "running_mean" in key for key in changed)  # its BN learns too
    assert (positive["fc.weight"] >= 0).all()
