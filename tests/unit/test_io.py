from __future__ import annotations

import json

import pytest

from aligned_forensics.common.io import atomic_directory, read_csv, write_csv, write_json


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "b.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old output is intact
    assert not (tmp_path / "out.partial").exists()


def test_json_is_sorted_rounded_and_nan_free(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1 / 3, "a": float("nan"), "c": [0.1234567891]})
    assert json.loads(path.read_text()) == {"a": None, "b": 0.333333, "c": [0.123457]}
    assert path.read_text().index('"a"') < path.read_text().index('"b"')


def test_csv_round_trip_with_unix_line_ends(tmp_path):
    path = tmp_path / "t.csv"
    assert write_csv(path, [{"x": 1, "y": "a,b"}], ["x", "y"]) == 1
    assert b"\r" not in path.read_bytes()
    assert read_csv(path) == [{"x": "1", "y": "a,b"}]


def test_declared_metrics_hold_only_the_chosen_quality_figures_and_the_record_keeps_everything(tmp_path):
    from aligned_forensics.common.io import info_path, pick, write_metrics

    record = {"ap": 0.912345678, "auc": 0.95, "seconds": 12.5, "autoencoder": "taef2", "n_real": 80}
    write_metrics(tmp_path / "metrics" / "eval.json", record, declared=pick(record, "ap", "auc"))
    assert json.loads((tmp_path / "metrics" / "eval.json").read_text()) == {"ap": 0.9123, "auc": 0.95}
    assert info_path(tmp_path / "metrics" / "eval.json") == tmp_path / "metrics" / "info" / "eval.json"
    assert json.loads((tmp_path / "metrics" / "info" / "eval.json").read_text())["autoencoder"] == "taef2"
    with pytest.raises(KeyError, match="bacc"):
        pick(record, "bacc")
