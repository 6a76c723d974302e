"""The reference stage in the shared workspace: metrics structure and ranges, per-image scores, ROC points."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from aligned_forensics.common.io import read_csv
from tests.stages.conftest import stage_main

SCORES = ("distance", "ratio")
METRICS = ("ap", "auc", "bacc", "real_acc", "fake_acc")
MATCHED = tuple(f"{key}_matched" for key in METRICS)  # the test sets with the format cue removed


def leaves(node, path=""):
    """(dotted key, value) of every leaf of a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else key)
    else:
        yield path, node


def test_reference_writes_numbers_only_in_range(workspace):
    declared = json.loads((workspace / "metrics/reference.json").read_text())
    metrics = json.loads((workspace / "metrics/info/reference.json").read_text())
    assert declared == {score: {key: round(metrics[score][key], 4) for key in ("ap", "auc", "bacc", "ap_matched",
                                                                              "auc_matched", "bacc_matched")}
                        for score in SCORES}
    pairs = {split: len(read_csv(workspace / f"data/manifest/{split}.csv")) for split in ("val", "test")}
    for key, value in leaves(metrics):  # `dvc metrics` reads numbers; labels and timings live in info.json
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), key
    assert set(metrics) == {"counts", *SCORES}
    assert metrics["counts"]["calibration"] == {"n_real": pairs["val"], "n_fake": pairs["val"],
                                                "rejected": 0}  # fewer than n_per_class: every val pair
    assert metrics["counts"]["test"] == {"n_real": pairs["test"], "n_fake": pairs["test"], "rejected": 0,
                                         "n_real_matched": pairs["test"], "n_fake_matched": pairs["test"]}
    for score in SCORES:
        values = metrics[score]
        assert set(values) == {"threshold", "calibration", "sets", *METRICS, *MATCHED}
        assert list(values["sets"]) == ["test"] and set(values["calibration"]) == set(METRICS)
        for key in METRICS:
            assert 0.0 <= values["calibration"][key] <= 1.0 and 0.0 <= values["sets"]["test"][key] <= 1.0
        for key in (*METRICS, *MATCHED):
            assert values[key] == values["sets"]["test"][key]  # the mean over one set
        assert abs(values["bacc"] - (values["real_acc"] + values["fake_acc"]) / 2) < 1e-5
        assert values["calibration"]["bacc"] >= 0.5  # criterion bacc: at least as good as calling every image one way
        rows = read_csv(workspace / "data/reference/test/scores.csv")
        assert len(rows) == 2 * pairs["test"]
        assert all((row[f"called_{score}"] == "fake") == (float(row[score]) > values["threshold"]) for row in rows)
        labels = np.array([row["label"] == "fake" for row in rows], dtype=int)
        matched = np.array([float(row[f"{score}_matched"]) for row in rows])
        reals = labels == 0  # a paired set: the reals are scored as they are, each fake in its real's JPEG format
        assert all(row[f"{score}_matched"] == row[score] for row in rows if row["label"] == "real")
        assert (matched[~reals] != np.array([float(row[score]) for row in rows])[~reals]).all()
        assert values["ap_matched"] == pytest.approx(average_precision_score(labels, matched), abs=1e-4)
        assert values["auc_matched"] == pytest.approx(roc_auc_score(labels, matched), abs=1e-4)
        called = matched > values["threshold"]
        assert values["bacc_matched"] == pytest.approx((np.mean(~called[reals]) + np.mean(called[~reals])) / 2)
        if score == "distance":  # -log(e1 + 1e-3), from the written (rounded) e1
            assert all(math.isclose(float(row[score]), -math.log(float(row["e1"]) + 1e-3), abs_tol=1e-4)
                       for row in rows)
        roc = json.loads((workspace / f"metrics/reference/roc/{score}-test.json").read_text())
        assert roc[0]["fpr"] == 0.0 and roc[-1]["fpr"] == 1.0 and roc[-1]["tpr"] == 1.0
    assert len(read_csv(workspace / "data/reference/calibration/scores.csv")) == 2 * pairs["val"]
    report = (workspace / "report/report.md").read_text()
    assert "## Training-free reference" in report
    for score in SCORES:
        values = metrics[score]["sets"]["test"]
        assert f"| test | reference `{score}` | {values['ap']:.4f} | {values['ap_matched']:.4f} |" in report
        mean = metrics[score]
        assert (f"* reference `{score}`: AP {mean['ap']:.3f} as delivered, {mean['ap_matched']:.3f} with the format "
                "cue removed: ") in report
    info = json.loads((workspace / "data/reference/info.json").read_text())
    assert info["autoencoder"] and info["seconds"] > 0 and info["round_trips_per_image"] == 2


def test_reference_on_a_folder_set_keeps_the_val_thresholds(workspace, tmp_path, monkeypatch):
    """A second test set of folders (with a broken file) joins; the thresholds, from val alone, do not move."""
    for row in read_csv(workspace / "data/manifest/test.csv"):
        for column, folder in (("real_path", "bench/real"), ("fake_path", "bench/fake")):
            target = tmp_path / folder / (workspace / row[column]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(workspace / row[column], target)
    (tmp_path / "bench/fake/broken.png").write_bytes(b"\x89PNG broken")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["reference"]["test_sets"] = [{"name": "test", "split": "test"},
                                        {"name": "bench", "real": str(tmp_path / "bench/real"),
                                         "fake": str(tmp_path / "bench/fake")}]
    params["reference"]["watch"] = str(tmp_path / "bench")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(workspace)  # manifests hold repository-relative paths; outputs go to tmp_path
    assert stage_main("reference")(["--params", str(tmp_path / "params.yaml"), "--metrics",
                                    str(tmp_path / "reference.json"), "--plots", str(tmp_path / "plots"),
                                    "--out", str(tmp_path / "out")]) == 0
    before = json.loads((workspace / "metrics/info/reference.json").read_text())
    after = json.loads((tmp_path / "info/reference.json").read_text())
    assert after["counts"]["bench"] == before["counts"]["test"] | {"rejected": 1}
    for score in SCORES:
        assert after[score]["threshold"] == before[score]["threshold"]
        assert after[score]["sets"]["test"] == before[score]["sets"]["test"]
        delivered = {key: after[score]["sets"]["bench"][key] for key in METRICS}
        assert delivered == {key: after[score]["sets"]["test"][key] for key in METRICS}
        assert set(after[score]["sets"]["bench"]) == {*METRICS, *MATCHED}  # unpaired: both classes at quality 96
        assert (tmp_path / "plots/roc" / f"{score}-bench.json").is_file()
    rejects = read_csv(tmp_path / "out/bench/rejects.csv")
    assert [(row["path"], row["stage"]) for row in rejects] == [(str(tmp_path / "bench/fake/broken.png"),
                                                                  "reference:bench")]
