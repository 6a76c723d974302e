"""The reference stage in the shared workspace: metrics structure and ranges, per-image scores, ROC points."""

from __future__ import annotations

import json
import math
import shutil

import yaml

from aligned_forensics.common.io import read_csv
from tests.stages.conftest import stage_main

SCORES = ("distance", "ratio")
METRICS = ("ap", "auc", "bacc", "real_acc", "fake_acc")


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
    assert declared == {score: {key: round(metrics[score][key], 4) for key in ("ap", "auc", "bacc")}
                        for score in SCORES}
    pairs = {split: len(read_csv(workspace / f"data/manifest/{split}.csv")) for split in ("val", "test")}
    for key, value in leaves(metrics):  # `dvc metrics` reads numbers; labels and timings live in info.json
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), key
    assert set(metrics) == {"counts", *SCORES}
    assert metrics["counts"]["calibration"] == {"n_real": pairs["val"], "n_fake": pairs["val"],
                                                "rejected": 0}  # fewer than n_per_class: every val pair
    assert metrics["counts"]["test"] == {"n_real": pairs["test"], "n_fake": pairs["test"],
                                         "rejected": 0}
    for score in SCORES:
        values = metrics[score]
        assert set(values) == {"threshold", "calibration", "sets", *METRICS}
        assert list(values["sets"]) == ["test"]
        for key in METRICS:
            assert 0.0 <= values["calibration"][key] <= 1.0 and 0.0 <= values["sets"]["test"][key] <= 1.0
            assert values[key] == values["sets"]["test"][key]  # the mean over one set
        assert abs(values["bacc"] - (values["real_acc"] + values["fake_acc"]) / 2) < 1e-5
        assert values["calibration"]["bacc"] >= 0.5  # criterion bacc: at least as good as calling every image one way
        rows = read_csv(workspace / "data/reference/test/scores.csv")
        assert len(rows) == 2 * pairs["test"]
        assert all((row[f"called_{score}"] == "fake") == (float(row[score]) > values["threshold"]) for row in rows)
        if score == "distance":  # -log(e1 + 1e-3), from the written (rounded) e1
            assert all(math.isclose(float(row[score]), -math.log(float(row["e1"]) + 1e-3), abs_tol=1e-4)
                       for row in rows)
        roc = json.loads((workspace / f"metrics/reference/roc/{score}-test.json").read_text())
        assert roc[0]["fpr"] == 0.0 and roc[-1]["fpr"] == 1.0 and roc[-1]["tpr"] == 1.0
    assert len(read_csv(workspace / "data/reference/calibration/scores.csv")) == 2 * pairs["val"]
    report = (workspace / "report/report.md").read_text()
    assert "## Training-free reference" in report
    for score in SCORES:
        assert f"| test | reference `{score}` | {metrics[score]['sets']['test']['ap']:.4f} |" in report
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
        assert after[score]["sets"]["bench"] == after[score]["sets"]["test"] == before[score]["sets"]["test"]
        assert (tmp_path / "plots/roc" / f"{score}-bench.json").is_file()
    rejects = read_csv(tmp_path / "out/bench/rejects.csv")
    assert [(row["path"], row["stage"]) for row in rejects] == [(str(tmp_path / "bench/fake/broken.png"),
                                                                  "reference:bench")]
