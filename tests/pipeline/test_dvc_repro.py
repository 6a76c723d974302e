"""End to end: the real `dvc` on a copy of this repository, with tiny params, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS
from tests.projects import ROOT, make_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git repository holding this checkout's tracked files and tiny params, after `dvc repro`."""
    folder = make_project(tmp_path_factory.mktemp("project"), TINY_PARAMS)
    run(["dvc", "repro"], folder)
    return folder


def test_repro_produces_every_metrics_file(project):
    for name in ("fetch", "reconstruct", "manifest", "threshold", "eval", "train", "stay_positive/eval",
                 "stay_positive/threshold", "stay_positive/train", "stay_positive/weights/summary", "reference"):
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert metrics, name
    shown = run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "metrics/eval.json" in shown and "bacc" in shown and "metrics/stay_positive/eval.json" in shown


def test_second_repro_runs_nothing(project):
    result = run(["dvc", "repro"], project)
    assert "Running stage" not in result.stdout + result.stderr
    run(["dvc", "status", "-q"], project)  # exit 0: nothing stale


def test_editing_the_augmentation_re_runs_training_only(project):
    """Scoring code lives apart from training code: thresholds and evaluations stay up to date (`dvc status`)."""
    augment = project / "src/aligned_forensics/training/augment.py"
    original = augment.read_text()
    augment.write_text(original + "\n# an edit\n")
    try:
        stale = json.loads(run(["dvc", "status", "--json"], project).stdout)
    finally:
        augment.write_text(original)
    assert set(stale) == {"train", "stay_positive"}, stale
    run(["dvc", "status", "-q"], project)


def test_data_folders_are_linked_not_copied(project):
    real = next((project / "data/real/train").glob("*.jpg"))
    assert real.stat().st_nlink == 2  # hardlinked into the DVC cache (cache.type hardlink,symlink)


def test_experiment_changes_metrics(project):
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"], project)
    run(["dvc", "exp", "run", "-S", "train.seed=1"], project)
    listed = run(["dvc", "exp", "show", "--json"], project).stdout
    assert "train.seed" in listed or '"seed": 1' in listed
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout or "{}")
    assert "metrics/train.json" in diff, diff
    params = json.loads(run(["dvc", "params", "diff", "--json"], project).stdout)
    assert params["params.yaml"]["train.seed"]["old"] == 17 and params["params.yaml"]["train.seed"]["new"] == 1


TAEF2 = ROOT / "assets" / "autoencoders" / "taef2"


@pytest.mark.skipif(not TAEF2.is_dir(), reason="assets/autoencoders/taef2 is missing")
def test_exp_run_with_the_taef2_weight_pair_runs_the_whole_pipeline(project):
    run(["dvc", "exp", "run", "-S", "autoencoder.kind=taesd", "-S", f"autoencoder.path={TAEF2}"], project)
    metrics = json.loads((project / "metrics/info/reconstruct.json").read_text())
    assert metrics["autoencoder_class"] == "TinyAutoencoder" and metrics["psnr_mean"] > 25
    assert metrics["images"] == json.loads((project / "metrics/info/fetch.json").read_text())["images"]
    assert (project / "metrics/reconstruct/pairs.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((project / "metrics/info/eval.json").read_text())["n_fake"] > 0


def test_exp_run_independent_batches_on_a_capped_subset(project):
    run(["dvc", "exp", "run", "-S", "train.sync=false", "-S", "train.data_cap=10"], project)
    state = json.loads((project / "metrics/train/metrics.json").read_text())
    assert state["step"] >= 1 and "best_val_bacc" in state
    import torch

    checkpoint = torch.load(project / "data/model/last.pt", weights_only=True)
    assert checkpoint["config"]["sync"] is False and checkpoint["config"]["data_cap"] == 10


def test_exp_run_fetches_exactly_the_selected_coco_images_from_a_mirror(project, http):
    """`dvc exp run -S` on the coco source's url, count and seed; the archive comes from a local server."""
    from aligned_forensics.data.sources.common import select_names
    from tests.dataset_archives import coco_images, coco_zip

    images = coco_images(20)
    http.files["/mirror/val2017.zip"] = coco_zip("val2017", images)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"]["sources"] = [{"kind": "coco", "split": "val", "count": 5, "url": "http://127.0.0.1:1/",
                                   "checksum": "", "seed": 0, "val_fraction": 0.3, "test_fraction": 0.3}]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "coco source"], project)
    run(["dvc", "exp", "run", "fetch", "-S", f"fetch.sources.0.url={http.url('/mirror/')}",
         "-S", "fetch.sources.0.count=7", "-S", "fetch.sources.0.seed=3"], project)
    expected = select_names([f"val2017/{name}" for name in images], count=7, list_file="", seed=3, stream=0xC0C0,
                            what="coco")
    index = [row["origin"].split(":", 1)[1] for row in csv_rows(project / "data/fetch/index.csv")]
    assert sorted(index) == expected
    written = sorted(path.name for path in (project / "data/real").rglob("*.jpg"))
    assert written == sorted(name.split("/")[1].replace("0000", "coco-0000", 1) for name in expected)
    assert (project / "data/downloads/val2017.zip").is_file()  # the cache is not a stage output


def csv_rows(path: Path) -> list[dict[str, str]]:
    from aligned_forensics.common.io import read_csv

    return read_csv(path)
