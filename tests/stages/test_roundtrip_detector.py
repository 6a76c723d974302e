"""A detector with the `roundtrip` input (an embedded, frozen autoencoder) through every stage that scores it.

The tiny workspace's data and autoencoder (a random diffusers AutoencoderKL) are copied; train runs with
filter_once, then threshold, evaluate and stay_positive run their dvc.yaml command lines, and predict scores
files from the bundle alone."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.io import read_csv
from aligned_forensics.detector.checkpoints import load_detector, read_checkpoint
from aligned_forensics.detector.preprocessing import to_normalised_tensor
from aligned_forensics.evaluation.predict import main as predict_main
from tests.stages.conftest import pipeline_commands, stage_main

CPU = torch.device("cpu")
STAGES = ("train", "threshold@base", "evaluate@base", "stay_positive", "threshold@stay_positive",
          "evaluate@stay_positive")


@pytest.fixture(scope="module")
def project(workspace, tmp_path_factory) -> Path:
    from tests.conftest import TINY_PARAMS

    folder = tmp_path_factory.mktemp("roundtrip")
    for name in ("data/manifest", "data/real", "data/fake", "data/autoencoder"):
        shutil.copytree(workspace / name, folder / name)
    params = copy.deepcopy(TINY_PARAMS)
    params["train"] |= {"arch": "cnn6", "input_filter": "roundtrip", "filter_once": True, "max_epochs": 1,
                        "augment": {"crop_size": 16, "resized_crop_prob": 0, "jitter_prob": 0, "grayscale_prob": 0,
                                    "cutout_prob": 0, "noise_prob": 0, "blur_prob": 0, "jpeg_prob": 0}}
    params["stay_positive"] |= {"filter_once": True, "max_epochs": 1}
    params["evaluate"]["sweeps"] = {"test_set": "test", "jpeg": [50], "webp": [], "resize": []}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    commands = {name: (script, argv) for name, script, argv in pipeline_commands()}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for name in STAGES:
            script, argv = commands[name]
            assert stage_main(script)(argv) == 0, name
    return folder


def test_the_trained_detector_embeds_the_pipelines_autoencoder_unchanged(project):
    payload = read_checkpoint(project / "data/model/best.pt")
    assert payload["input_filter"] == "roundtrip" and payload["autoencoder"]["class"] == "AutoencoderKL"
    pipeline = load_file(project / "data/autoencoder/diffusion_pytorch_model.safetensors")
    embedded = {key.removeprefix("input_filter.autoencoder."): value for key, value in payload["state_dict"].items()
                if key.startswith("input_filter.autoencoder.")}
    assert embedded.keys() == pipeline.keys()
    for key, value in pipeline.items():
        assert torch.equal(embedded[key], value), key  # frozen through training


def test_every_scoring_stage_reports_delivered_and_format_matched_figures(project):
    for metrics in ("metrics/eval.json", "metrics/stay_positive/eval.json"):
        figures = json.loads((project / metrics).read_text())
        assert {"ap", "ap_matched", "bacc_matched"} <= figures.keys(), metrics
    weight = read_checkpoint(project / "data/stay_positive/model/best.pt")["state_dict"]["fc.weight"]
    assert (weight >= 0).all()


def test_predict_needs_nothing_but_the_bundle(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    rows = read_csv(project / "data/manifest/test.csv")[:2]
    images = [row["fake_path"] for row in rows]
    assert predict_main([*images, "--model", "data/bundle/detector.pt", "--out", "predict.csv"]) == 0
    model, _ = load_detector(project / "data/bundle/detector.pt", device=CPU)
    with torch.no_grad():
        expected = [model(to_normalised_tensor(decode_rgb(Path(path)))[None]).item() for path in images]
    written = [float(row["logit"]) for row in read_csv(project / "predict.csv")]
    np.testing.assert_allclose(written, expected, atol=1e-5)
