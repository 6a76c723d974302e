"""Evaluation on several test sets (folders, globs, odd files), robustness sweeps, and the predict CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from aligned_forensics.common.compression import encode_like, read_compression
from aligned_forensics.common.images import decode_rgb
from aligned_forensics.common.io import read_csv, write_csv
from aligned_forensics.evaluation.predict import main as predict_main
from tests.stages.conftest import stage_main


@pytest.fixture
def folders(workspace, tmp_path):
    """A benchmark-like layout: real/ and per-generator fake folders, with a text file and a broken image."""
    for row in read_csv(workspace / "data/manifest/test.csv"):
        for column, folder in (("real_path", "bench/real"), ("fake_path", "bench/gen_a")):
            target = tmp_path / folder / (workspace / row[column]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(workspace / row[column], target)
    (tmp_path / "bench/gen_a/readme.txt").write_text("not an image")
    (tmp_path / "bench/gen_a/broken.png").write_bytes(b"\x89PNG broken")
    return tmp_path / "bench"


def run_evaluate(workspace, tmp_path, monkeypatch, test_sets, *extra: str):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["evaluate"]["test_sets"] = test_sets
    params["evaluate"]["watch"] = str(tmp_path)  # outside the pipeline's outputs: DVC must watch it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(workspace)  # manifests hold repository-relative paths; outputs go to tmp_path
    return stage_main("evaluate")(["--params", str(tmp_path / "params.yaml"), "--metrics",
                                   str(tmp_path / "metrics/eval.json"), "--plots", str(tmp_path / "metrics/eval"),
                                   "--scores", str(tmp_path / "data/evaluate"), *extra])


def recomputed(rows: list[dict[str, str]], column: str, threshold: float) -> dict[str, float]:
    """AP, AUC and balanced accuracy at `threshold` of one score column of a written scores.csv."""
    labels = np.array([row["label"] == "fake" for row in rows], dtype=int)
    scores = np.array([float(row[column]) for row in rows])
    called = scores > threshold
    return {"ap": average_precision_score(labels, scores), "auc": roc_auc_score(labels, scores),
            "bacc": (np.mean(~called[labels == 0]) + np.mean(called[labels == 1])) / 2}


def test_matched_figures_are_declared_and_equal_a_recomputation_from_the_scores(workspace, folders, tmp_path,
                                                                                monkeypatch):
    """The manifest's test split (JPEG reals, PNG fakes: each fake in its real's JPEG format) and the same images
    as folders (unpaired: both classes at JPEG quality 96)."""
    sets = [{"name": "test", "split": "test"},
            {"name": "gen_a", "real": str(folders / "real"), "fake": str(folders / "gen_a")}]
    assert run_evaluate(workspace, tmp_path, monkeypatch, sets) == 0
    declared = json.loads((tmp_path / "metrics/eval.json").read_text())
    metrics = json.loads((tmp_path / "metrics/info/eval.json").read_text())
    for name in ("test", "gen_a"):
        rows = read_csv(tmp_path / "data/evaluate" / name / "scores.csv")
        expected = recomputed(rows, "logit_matched", metrics["threshold"])
        for key in ("ap", "auc", "bacc"):
            assert declared["sets"][name][f"{key}_matched"] == pytest.approx(expected[key], abs=1e-4), (name, key)
            assert metrics["sets"][name][f"{key}_matched"] == pytest.approx(expected[key], abs=1e-5), (name, key)
        delivered = recomputed(rows, "logit", metrics["threshold"])
        assert declared["sets"][name]["ap"] == pytest.approx(delivered["ap"], abs=1e-4)
        changed = {row["label"] for row in rows if row["logit_matched"] != row["logit"]}
        assert changed == ({"fake"} if name == "test" else {"real", "fake"})  # paired: reals as delivered
    for key in ("ap_matched", "auc_matched", "bacc_matched"):
        assert declared[key] == pytest.approx(np.mean([s[key] for s in metrics["sets"].values()]), abs=1e-4)
    summary = (tmp_path / "metrics/eval/summary.md").read_text()
    assert "ap_matched" in summary.splitlines()[0]


def test_jpeg_fakes_written_like_their_reals_are_scored_as_they_are(workspace, tmp_path, monkeypatch):
    """reconstruct.format: match writes each fake as <stem>.jpg with its real's tables: nothing left to match."""
    rows = read_csv(workspace / "data/manifest/test.csv")
    for row in rows:
        real = workspace / row["real_path"]
        fake = tmp_path / "fake" / f"{row['stem']}.jpg"
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_bytes(encode_like(decode_rgb(workspace / row["fake_path"]), read_compression(real)))
        row["fake_path"] = str(fake)
    write_csv(tmp_path / "manifest/test.csv", rows, tuple(rows[0]))
    assert run_evaluate(workspace, tmp_path, monkeypatch, [{"name": "test", "split": "test"}],
                        "--manifest", str(tmp_path / "manifest")) == 0
    scores = read_csv(tmp_path / "data/evaluate/test/scores.csv")
    assert len(scores) == 2 * len(rows) and all(row["logit_matched"] == row["logit"] for row in scores)
    declared = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert declared["ap_matched"] == declared["ap"] and declared["bacc_matched"] == declared["bacc"]


def test_several_test_sets_and_their_mean(workspace, folders, tmp_path, monkeypatch):
    sets = [{"name": "test", "split": "test"},
            {"name": "gen_a", "real": str(folders / "real"), "fake": str(folders / "gen_a")},
            {"name": "gen_a_glob", "real": str(folders / "real" / "*.jpg"), "fake": str(folders / "gen_a/*.png")}]
    assert run_evaluate(workspace, tmp_path, monkeypatch, sets) == 0
    metrics = json.loads((tmp_path / "metrics/info/eval.json").read_text())
    assert set(metrics["sets"]) == {"test", "gen_a", "gen_a_glob"}
    assert metrics["sets"]["gen_a"]["ap"] == metrics["sets"]["test"]["ap"]  # the same images, found by folder
    assert metrics["sets"]["gen_a"]["rejected"] == 1  # broken.png listed and excluded; readme.txt is not an image
    assert metrics["ap"] == pytest.approx(sum(s["ap"] for s in metrics["sets"].values()) / 3)
    assert "broken.png" in (tmp_path / "data/evaluate/gen_a/rejects.csv").read_text()
    summary = (tmp_path / "metrics/eval/summary.md").read_text()
    assert "| gen_a_glob |" in summary and "| **mean** |" in summary
    sweeps = json.loads((tmp_path / "metrics/eval/sweeps.json").read_text())
    assert set(sweeps) == {"jpeg-50", "webp-60", "resize-0.5"}
    assert all(0 <= row["mean_p_fake_real"] <= 1 and row["n_real"] > 0 for row in sweeps.values())
    assert json.loads((tmp_path / "metrics/eval/sweeps/resize.json").read_text())[0]["level"] == 0.5


def test_unreadable_headers_and_undecodable_pixels_are_rejected_under_one_stage_label(workspace, folders, tmp_path,
                                                                                     monkeypatch):
    """broken.png fails at its header, truncated.jpg only when its pixels are decoded: one label for both."""
    whole = sorted((folders / "real").glob("*.jpg"))[0].read_bytes()
    scan = whole.index(b"\xff\xda")  # start of scan: every header before it is whole, the pixels are cut short
    (folders / "gen_a" / "truncated.jpg").write_bytes(whole[: scan + 40])
    sets = [{"name": "test", "split": "test"},
            {"name": "gen_a", "real": str(folders / "real"), "fake": str(folders / "gen_a")}]
    assert run_evaluate(workspace, tmp_path, monkeypatch, sets) == 0
    rejects = read_csv(tmp_path / "data/evaluate/gen_a/rejects.csv")
    assert {Path(row["path"]).name: row["stage"] for row in rejects} == {"broken.png": "evaluate:gen_a",
                                                                          "truncated.jpg": "evaluate:gen_a"}
    assert "truncated" in next(row["reason"] for row in rejects if row["path"].endswith("truncated.jpg"))
    assert json.loads((tmp_path / "metrics/info/eval.json").read_text())["sets"]["gen_a"]["rejected"] == 2


def test_a_set_without_fakes_is_named(workspace, folders, tmp_path, monkeypatch, caplog):
    sets = [{"name": "test", "split": "test"},
            {"name": "empty_fakes", "real": str(folders / "real"), "fake": str(folders / "nothing_here")}]
    assert run_evaluate(workspace, tmp_path, monkeypatch, sets) == 2
    assert "set 'empty_fakes' has no readable fake images" in caplog.text


def test_predict_scores_a_folder_with_odd_files(workspace, folders, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "scores.csv"
    assert predict_main([str(folders / "gen_a"), "--model", str(workspace / "data/bundle"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = read_csv(out)
    assert printed[0].split("\t") == ["path", "logit", "probability_fake", "called"] and len(printed) == len(rows) + 1
    assert len(rows) == len(list((folders / "gen_a").glob("*.png"))) - 1  # broken.png skipped
    assert "skipped" in caplog.text and "broken.png" in caplog.text and "(calibrated)" in caplog.text
    threshold = json.loads((workspace / "metrics/threshold.json").read_text())["threshold"]
    assert all((float(row["logit"]) > threshold) == (row["called"] == "fake") for row in rows)


def _brute_force_rates(labels, scores):
    """(fpr, tpr) at every distinct decision, each counted from the scores, from the highest threshold down."""
    thresholds = [np.inf, *sorted(set(scores), reverse=True)]  # 'fake' means score > t: t = each score, and above
    points = [(float(np.mean(scores[labels == 0] > t)), float(np.mean(scores[labels == 1] > t))) for t in thresholds]
    points.append((1.0, 1.0))
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def test_a_benchmark_root_yields_one_set_per_generator_with_eer_and_pd(workspace, folders, tmp_path, monkeypatch):
    """reals beside three generator folders: three sets plus their mean; EER and Pd@1/5/10 % FAR recomputed by
    brute force from the per-image scores the stage wrote."""
    (folders / "gen_a" / "broken.png").unlink()
    fakes = sorted((folders / "gen_a").glob("*.png"))
    for name, chosen in (("gen_b", fakes[::2]), ("gen_c", fakes[1::2])):
        (folders / name).mkdir()
        for path in chosen:
            shutil.copy(path, folders / name / path.name)
    assert run_evaluate(workspace, tmp_path, monkeypatch, [{"name": "test", "split": "test"},
                                                           {"root": str(folders)}]) == 0
    metrics = json.loads((tmp_path / "metrics/info/eval.json").read_text())
    assert sorted(metrics["sets"]) == ["gen_a", "gen_b", "gen_c", "test"]
    for name in ("gen_a", "gen_b", "gen_c"):
        values = metrics["sets"][name]
        rows = read_csv(tmp_path / "data/evaluate" / name / "scores.csv")
        labels = np.array([row["label"] == "fake" for row in rows], dtype=int)
        scores = np.array([float(row["logit"]) for row in rows])
        fpr, tpr = _brute_force_rates(labels, scores)
        for key, far in (("pd_at_1pct_far", 0.01), ("pd_at_5pct_far", 0.05), ("pd_at_10pct_far", 0.10)):
            assert values[key] == pytest.approx(tpr[fpr <= far + 1e-9].max(), abs=1e-4), (name, key)
        fnr = 1 - tpr
        i = int(np.argmax(fpr >= fnr))
        t = (fnr[i - 1] - fpr[i - 1]) / ((fpr[i] - fpr[i - 1]) - (fnr[i] - fnr[i - 1])) if i else 0.0
        assert values["eer"] == pytest.approx(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]) if i else fpr[0], abs=1e-4)
        assert values["n_fake"] == len(list((folders / name).glob("*.png")))
    for key in ("eer", "pd_at_1pct_far", "pd_at_5pct_far", "pd_at_10pct_far", "ap"):
        assert metrics[key] == pytest.approx(np.mean([s[key] for s in metrics["sets"].values()]), abs=1e-4)
    declared = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert {"eer", "pd_at_5pct_far"} <= set(declared) and set(declared["sets"]) == {"gen_a", "gen_b", "gen_c", "test"}
    summary = (tmp_path / "metrics/eval/summary.md").read_text()
    assert "| gen_c |" in summary and "pd_at_10pct_far" in summary and "eer" in summary


def test_an_unwatched_outside_folder_stops_evaluate_before_any_work(workspace, folders, tmp_path, monkeypatch,
                                                                    caplog):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["evaluate"]["test_sets"] = [{"root": str(folders)}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(workspace)
    assert stage_main("evaluate")(["--params", str(tmp_path / "params.yaml"), "--metrics",
                                   str(tmp_path / "metrics/eval.json")]) == 2
    assert "not inside evaluate.watch" in caplog.text and not (tmp_path / "metrics").exists()
