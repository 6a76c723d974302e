"""Each stage's main() on tiny params in a temp folder, in pipeline order, plus its failure modes."""

from __future__ import annotations

import json
import logging

import yaml

from aligned_forensics.common.io import read_csv
from tests.stages.conftest import stage_main


def test_every_stage_writes_its_outputs(workspace):
    index = read_csv(workspace / "data/fetch/index.csv")
    reals = sorted((workspace / "data/real").rglob("*.jpg"))
    fakes = sorted((workspace / "data/fake").rglob("*.png"))
    assert len(index) == len(reals) == len(fakes) == 44
    assert [p.stem for p in reals] == [p.stem for p in fakes]
    for split in ("train", "val", "test"):
        rows = read_csv(workspace / f"data/manifest/{split}.csv")
        assert rows and [r["stem"] for r in rows] == sorted(r["stem"] for r in rows)
    assert (workspace / "data/model/best.pt").is_file() and (workspace / "data/model/last.pt").is_file()
    assert not list(workspace.rglob("*.partial"))


def test_metrics_are_computed_values(workspace):
    metrics = {name: json.loads((workspace / "metrics" / "info" / f"{name}.json").read_text())
               for name in ("fetch", "reconstruct", "manifest", "threshold", "eval")}
    declared = {name: json.loads((workspace / "metrics" / f"{name}.json").read_text())
                for name in ("fetch", "reconstruct", "manifest", "threshold", "eval", "train")}
    assert declared["reconstruct"] == {key: round(metrics["reconstruct"][key], 4)
                                       for key in ("psnr_mean", "psnr_min", "rejected")}
    assert declared["threshold"]["threshold"] == metrics["threshold"]["threshold"]  # full precision: evaluate reads it
    assert all(isinstance(value, (int, float)) for values in declared.values() for value in values.values())
    assert metrics["fetch"]["images"] == 44 and metrics["fetch"]["rejected"] == 0
    assert metrics["reconstruct"]["images"] == 44 and 0 < metrics["reconstruct"]["psnr_mean"] < 60
    threshold = metrics["threshold"]
    assert {"threshold", "criterion", "n_real", "n_fake", "bacc", "tpr", "tnr", "ap", "auc"} <= set(threshold)
    assert threshold["n_real"] == threshold["n_fake"] == metrics["manifest"]["pairs_val"]  # fewer than 5,000
    evaluation = metrics["eval"]
    assert evaluation["threshold"] == threshold["threshold"]
    assert evaluation["n_real"] == metrics["manifest"]["pairs_test"]
    for key in ("ap", "auc", "real_acc", "fake_acc", "bacc", "bacc_at_0", "real_acc_at_0", "fake_acc_at_0"):
        assert 0.0 <= evaluation[key] <= 1.0, key
    train = json.loads((workspace / "metrics/train/metrics.json").read_text())
    assert {"best_val_bacc", "best_epoch", "train_loss", "val_auc"} <= set(train)
    roc = json.loads((workspace / "metrics/eval/roc/test.json").read_text())
    assert roc[0] == {"fpr": 0.0, "tpr": roc[0]["tpr"], "threshold": roc[0]["threshold"]} and roc[-1]["fpr"] == 1.0
    for picture in ("metrics/eval/curves/test.png", "metrics/eval/sweeps.png", "metrics/train/curves.png"):
        assert (workspace / picture).read_bytes()[:4] == b"\x89PNG"
    report = (workspace / "report/report.md").read_text()
    assert report.startswith("# tiny") and f"**{threshold['threshold']:.4f}**" in report
    for link in ("reconstruct/pairs.png", "train/curves.png", "eval/curves/test.png", "eval/sweeps.png"):
        assert f"](../metrics/{link})" in report and (workspace / "report" / "../metrics" / link).is_file()
    scores = read_csv(workspace / "data/evaluate/test/scores.csv")
    assert len(scores) == evaluation["n_real"] + evaluation["n_fake"]
    called_fake = [row for row in scores if row["called"] == "fake"]
    assert all(float(row["logit"]) > evaluation["threshold"] for row in called_fake)


def test_unknown_key_fails_before_any_work(workspace, tmp_path, monkeypatch, caplog):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert stage_main("train")(["--manifest", str(workspace / "data/manifest")]) == 2
    assert "unknown params key 'train.learning_rate'" in caplog.text
    assert not (tmp_path / "data").exists()


def test_missing_upstream_output_names_the_stage_to_run(tmp_path, monkeypatch, caplog):
    from tests.conftest import TINY_PARAMS

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert stage_main("threshold")([]) == 2
    assert "data/manifest/val.csv not found" in caplog.text and "dvc repro" in caplog.text


def test_undecodable_real_is_rejected_and_counted(workspace, tmp_path, monkeypatch):
    index = read_csv(workspace / "data/fetch/index.csv")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    index[0]["path"] = str(broken)
    from aligned_forensics.common.io import write_csv

    write_csv(tmp_path / "index.csv", index, list(index[0]))
    monkeypatch.chdir(workspace)
    code = stage_main("reconstruct")(["--index", str(tmp_path / "index.csv"), "--out", str(tmp_path / "fake"),
                                      "--rejects", str(tmp_path / "rejects.csv"),
                                      "--metrics", str(tmp_path / "metrics.json")])
    assert code == 0
    rejects = read_csv(tmp_path / "rejects.csv")
    assert [r["path"] for r in rejects] == [str(broken)] and rejects[0]["reason"]
    metrics = json.loads((tmp_path / "info" / "metrics.json").read_text())
    assert metrics["rejected"] == 1 and metrics["images"] == len(index) - 1


def test_fetch_dry_run_lists_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from tests.conftest import TINY_PARAMS

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    monkeypatch.chdir(tmp_path)
    assert stage_main("fetch")(["--dry-run"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0][0].startswith("download cache: data/downloads")
    assert len(lines) == 45 and all(line[0] == "select" and line[1] in ("train", "val", "test") for line in lines[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_folder_source_with_odd_sizes_pairs_up(tmp_path, monkeypatch):
    """Your own photos: any size and format; reconstructions come back at exactly the real's size."""
    import numpy as np

    from aligned_forensics.common.images import encode_jpeg, encode_png
    from tests.conftest import TINY_PARAMS

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for index, (height, width) in enumerate([(21, 30), (33, 17), (40, 40), (27, 35), (19, 44), (32, 24)]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        (photos / f"p{index}.{'png' if index % 2 else 'jpg'}").write_bytes(
            encode_png(pixels) if index % 2 else encode_jpeg(pixels, quality=85))
    params = dict(TINY_PARAMS, fetch={"seed": 0, "sources": [
        {"kind": "folder", "path": str(photos), "val_fraction": 0.3, "test_fraction": 0.2}], "watch": str(photos)})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for name in ("fetch", "autoencoder", "reconstruct", "manifest"):
        assert stage_main(name)([]) == 0, name
    rows = [row for split in ("train", "val", "test") for row in read_csv(tmp_path / f"data/manifest/{split}.csv")]
    assert len(rows) == 6
    assert {(row["width"], row["height"]) for row in rows} >= {("30", "21"), ("17", "33")}
    assert {row["real_format"] for row in rows} == {"jpeg", "png"} and {row["fake_format"] for row in rows} == {"png"}
