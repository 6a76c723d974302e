"""Image sets: benchmark layouts, archives (local and served), validation pooling, watched paths, EER and Pd."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aligned_forensics.common.errors import DataError, ParamsError
from aligned_forensics.common.image_sets import TestSet, ValidationSet, resolve_test_set, resolve_validation
from aligned_forensics.common.images import encode_png
from aligned_forensics.common.layouts import benchmark_layout
from aligned_forensics.common.params import build_config
from aligned_forensics.common.watch import check_watched
from aligned_forensics.detector.metrics import (
    candidate_thresholds,
    detection_at_false_alarm,
    equal_error_rate,
    rates_at,
)


def write_image(path: Path, seed: int, side: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.random.default_rng(seed).integers(0, 256, (side, side + 4, 3), dtype=np.uint8)))
    return path


def beside_layout(root: Path, generators=("sd", "flux", "ldm"), reals: int = 3, fakes: int = 2) -> Path:
    """root/real/*.png beside root/<generator>/*.png, plus a stray text file."""
    for i in range(reals):
        write_image(root / "real" / f"r{i}.png", i)
    for g, name in enumerate(generators):
        for i in range(fakes):
            write_image(root / name / "sub" / f"f{i}.png", 100 + 10 * g + i)
    (root / "sd" / "notes.txt").write_text("not an image")
    return root


def dmid_layout(root: Path) -> Path:
    """root/<generator>/0_real + 1_fake, each generator with reals of its own."""
    for g, name in enumerate(("latent_diffusion_class2image", "latent_diffusion_text2img_set0")):
        for i in range(2 + g):
            write_image(root / name / "0_real" / f"r{i}.png", 200 + 10 * g + i)
        for i in range(3):
            write_image(root / name / "1_fake" / f"f{i}.png", 300 + 10 * g + i)
    return root


def test_reals_beside_generators_give_one_set_per_generator(tmp_path):
    sets = benchmark_layout(beside_layout(tmp_path / "bench"))
    assert [name for name, _, _ in sets] == ["flux", "ldm", "sd"]
    for name, reals, fakes in sets:
        assert [p.name for p in reals] == ["r0.png", "r1.png", "r2.png"]  # shared by every generator
        assert len(fakes) == 2 and all(p.parent.parent.name == name for p in fakes)  # recursive, no .txt


def test_several_real_folders_stop_until_real_folder_names_them(tmp_path):
    root = beside_layout(tmp_path / "bench", generators=("sd",))
    write_image(root / "reals" / "c.png", 50)
    with pytest.raises(DataError, match=r"several real folders \['real', 'reals'\].*-S '…real_folder=real'"):
        benchmark_layout(root)
    names = [name for name, _, _ in benchmark_layout(root, real_folder="real")]
    assert names == ["reals", "sd"]  # only the named folder is real: the other is a "generator"
    (name, reals, _), = benchmark_layout(root, real_folder="real, reals")  # comma-separated: pooled
    assert name == "sd" and len(reals) == 4


@pytest.mark.parametrize("generator", ["RealVisXL", "dreamlike-photoreal-2.0", "realistic-vision", "real_fake"])
def test_a_generator_whose_name_contains_real_is_scored_as_fakes(tmp_path, generator, caplog):
    root = beside_layout(tmp_path / "bench", generators=("sd", generator))
    sets = {name: (reals, fakes) for name, reals, fakes in benchmark_layout(root)}
    assert sorted(sets) == sorted(["sd", generator])
    reals, fakes = sets[generator]
    assert {p.parent.name for p in reals} == {"real"}  # the reals are the `real` folder's, and only those
    assert {p.parent.parent.name for p in fakes} == {generator}  # its own images are fakes
    assert f"'{generator}' is scored as a generator" in caplog.text


def test_a_root_without_an_exact_real_folder_stops_with_the_fix(tmp_path):
    root = beside_layout(tmp_path / "bench", generators=("sd", "RealVisXL"), reals=0)
    for i in range(2):
        write_image(root / "real_coco_valid" / f"c{i}.png", 60 + i)
    with pytest.raises(DataError) as error:
        benchmark_layout(root)
    message = str(error.value)
    assert "no real folder" in message and "['RealVisXL', 'real_coco_valid', 'sd']" in message
    assert "-S '…real_folder=RealVisXL,real_coco_valid'" in message  # the candidates, to edit down
    (name, reals, _), (other, _, _) = benchmark_layout(root, real_folder="real_coco_valid")
    assert (name, other, len(reals)) == ("RealVisXL", "sd", 2)
    with pytest.raises(DataError, match=r"names \['real_ucid'\], which is not a folder there"):
        benchmark_layout(root, real_folder="real_coco_valid,real_ucid")


def test_the_dmimagedetection_layout_keeps_each_generators_reals(tmp_path):
    sets = benchmark_layout(dmid_layout(tmp_path / "valid"))
    assert [(name, len(reals), len(fakes)) for name, reals, fakes in sets] == [
        ("latent_diffusion_class2image", 2, 3), ("latent_diffusion_text2img_set0", 3, 3)]


def test_layout_errors_say_what_was_found(tmp_path):
    (tmp_path / "odd" / "a").mkdir(parents=True)
    (tmp_path / "odd" / "b").mkdir()
    with pytest.raises(DataError, match=r"has no real folder: none of \['a', 'b'\]"):
        benchmark_layout(tmp_path / "odd")
    root = beside_layout(tmp_path / "bench")
    (root / "empty_generator").mkdir()
    with pytest.raises(DataError, match="generator 'empty_generator' has 3 real and 0 fake"):
        benchmark_layout(root)
    with pytest.raises(DataError, match="not a folder"):
        benchmark_layout(tmp_path / "missing")


def test_a_root_test_set_is_named_after_the_generator_folders(tmp_path):
    root = beside_layout(tmp_path / "bench")
    sets = resolve_test_set(TestSet(root=str(root)), manifest_dir=tmp_path, cache=tmp_path / "cache")
    assert [s.name for s in sets] == ["flux", "ldm", "sd"]
    prefixed = resolve_test_set(TestSet(name="bench", root=str(root)), manifest_dir=tmp_path, cache=tmp_path)
    assert [s.name for s in prefixed] == ["bench-flux", "bench-ldm", "bench-sd"]
    assert all((item.height, item.width) == (16, 20) for item in sets[0].reals)  # sizes from the headers


def archive_of(folder: Path, target: Path) -> Path:
    """folder's files in a zip or tar.gz named target, paths relative to folder's parent."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if target.suffix == ".zip":
        with zipfile.ZipFile(target, "w") as archive:
            for file in files:
                archive.write(file, file.relative_to(folder.parent).as_posix())
    else:
        with tarfile.open(target, "w:gz") as archive:
            for file in files:
                archive.add(file, file.relative_to(folder.parent).as_posix())
    return target


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_an_archive_and_a_folder_inside_it_read_like_the_folder(tmp_path, suffix):
    root = beside_layout(tmp_path / "src" / "valid")
    archive = archive_of(root, tmp_path / f"release{suffix}")
    cache = tmp_path / "cache"
    from_folder = resolve_test_set(TestSet(root=str(root)), manifest_dir=tmp_path, cache=cache)
    from_archive = resolve_test_set(TestSet(root=f"{archive}/valid"), manifest_dir=tmp_path, cache=cache)
    assert [(s.name, len(s.reals), len(s.fakes)) for s in from_archive] == \
        [(s.name, len(s.reals), len(s.fakes)) for s in from_folder]
    unpacked = Path(from_archive[0].reals[0].path)
    assert (tmp_path / "cache" / "unpacked") in unpacked.parents
    assert unpacked.read_bytes() == (root / "real" / unpacked.name).read_bytes()
    again = resolve_test_set(TestSet(root=f"{archive}/valid"), manifest_dir=tmp_path, cache=cache)
    assert again == from_archive  # unpacked once: the second read finds the finished folder


def test_an_archive_with_an_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("../outside.png", b"x")
    with pytest.raises(DataError, match="unsafe member"):
        resolve_test_set(TestSet(name="x", real=f"{archive}", fake=f"{archive}"), manifest_dir=tmp_path,
                         cache=tmp_path / "cache")
    assert not (tmp_path / "outside.png").exists()


def test_an_archive_by_url_is_downloaded_verified_and_unpacked(tmp_path, http):
    """A real HTTP server on 127.0.0.1 serves the archive; a wrong checksum is refused."""
    root = beside_layout(tmp_path / "src" / "bench", generators=("sd",))
    data = archive_of(root, tmp_path / "bench.zip").read_bytes()
    http.files["/sets/bench.zip"] = data
    url = http.url("/sets/bench.zip") + "/bench"
    good = f"sha256:{hashlib.sha256(data).hexdigest()}"
    sets = resolve_test_set(TestSet(root=url, checksum=good), manifest_dir=tmp_path, cache=tmp_path / "cache")
    assert [(s.name, len(s.reals), len(s.fakes)) for s in sets] == [("sd", 3, 2)]
    with pytest.raises(DataError, match="sha256"):
        resolve_test_set(TestSet(root=url, checksum="sha256:" + "0" * 64), manifest_dir=tmp_path,
                         cache=tmp_path / "other")


def test_validation_pools_every_generator_and_defaults_to_the_manifest(tmp_path):
    root = beside_layout(tmp_path / "bench")
    pooled = resolve_validation(ValidationSet(root=str(root)), val_manifest=tmp_path / "none.csv", stage="train")
    assert len(pooled.reals) == 3 and len(pooled.fakes) == 6  # shared reals counted once
    manifest = tmp_path / "val.csv"
    manifest.write_text("stem,real_path,fake_path,width,height\na,r.png,f.png,20,16\n")
    paired = resolve_validation(ValidationSet(), val_manifest=manifest, stage="train")
    assert [(i.path, i.height) for i in paired.reals + paired.fakes] == [("r.png", 16), ("f.png", 16)]


def test_validation_and_test_set_params_are_checked(tmp_path):
    with pytest.raises(ParamsError, match="train.validation.real/fake"):
        build_config(ValidationSet, {"real": "a"}, section="train.validation").check("train.validation")
    with pytest.raises(ParamsError, match="either root, or real and fake"):
        ValidationSet(root="r", real="a", fake="b").check("train.validation")
    with pytest.raises(ParamsError, match="exactly one of split, real\\+fake, root"):
        TestSet(name="x", split="test", root="r").check("evaluate.test_sets[0]")
    with pytest.raises(ParamsError, match="checksum"):
        TestSet(name="x", root="/local/bench.zip", checksum="sha256:" + "0" * 64).check("evaluate.test_sets[0]")
    TestSet(root="/data/bench").check("evaluate.test_sets[0]")  # a root needs no name


def test_outside_paths_must_be_watched(tmp_path):
    bench = beside_layout(tmp_path / "bench")
    reads = [("evaluate.test_sets[1]", str(bench / "real" / "*.png"), "")]
    with pytest.raises(ParamsError, match=rf"not inside evaluate.watch, .*dvc exp run -S evaluate.watch={bench}/real"):
        check_watched(reads, watch="data/manifest", section="evaluate")
    with pytest.raises(ParamsError, match=r"not inside evaluate.watch \(now .*/sd\)"):
        check_watched(reads, watch=str(bench / "sd"), section="evaluate")
    check_watched(reads, watch=str(bench), section="evaluate")  # the folder covers the glob
    check_watched(reads, watch=str(bench / "real"), section="evaluate")
    check_watched([("x", "https://example.org/set.zip", "sha256:" + "0" * 64)], watch="data/manifest",
                  section="evaluate")


def test_the_pipelines_own_images_need_no_watch_but_fetch_must_watch_its_folders(tmp_path, monkeypatch):
    """Outside reals scored against the pipeline's fakes: only the reals need the watch (the manifest pins every
    fake); fetch, first in the pipeline, watches every folder it reads."""
    monkeypatch.chdir(tmp_path)  # the project: stages run in its root
    reals = beside_layout(tmp_path / "outside" / "bench") / "real"
    reads = [("evaluate.test_sets[1]", str(reals), ""), ("evaluate.test_sets[1]", "data/fake/test", "")]
    check_watched(reads, watch=str(reals), section="evaluate")
    with pytest.raises(ParamsError) as error:
        check_watched(reads, watch="data/manifest", section="evaluate")
    message = str(error.value)
    assert f"{reals} is not written by the pipeline (data/real, data/fake) and not inside evaluate.watch," in message
    assert "(now" not in message  # the default watches nothing outside: no path to report
    with pytest.raises(ParamsError, match=r"'evaluate.test_sets\[1\]': data/reference is not written by"):
        check_watched([("evaluate.test_sets[1]", "data/reference", "")], watch=str(reals), section="evaluate")
    with pytest.raises(ParamsError, match=r"'fetch.sources\[0\].path': data/fake is not inside fetch.watch"):
        check_watched([("fetch.sources[0].path", "data/fake", "")], watch="stages/fetch.py", section="fetch",
                      pipeline_folders=())


def _brute_force_roc(labels, scores):
    """(fpr, tpr) at every candidate threshold, counted one threshold at a time, from high to low thresholds."""
    points = [rates_at(labels, scores, t) for t in candidate_thresholds(scores)[::-1]]
    return np.array([1 - r.tnr for r in points]), np.array([r.tpr for r in points])


@pytest.mark.parametrize("seed", range(5))
def test_eer_and_detection_at_false_alarms_match_a_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 70 + [1] * 45)
    scores = np.round(np.concatenate([rng.normal(-1, 1, 70), rng.normal(0.8, 1.2, 45)]), 1 + seed % 2)  # ties
    fpr, tpr = _brute_force_roc(labels, scores)
    for far in (0.01, 0.05, 0.10):
        assert detection_at_false_alarm(labels, scores, far) == pytest.approx(tpr[fpr <= far + 1e-12].max())
    fnr = 1 - tpr
    i = next(k for k in range(len(fpr)) if fpr[k] >= fnr[k])  # the first point past FPR = FNR
    # on segment (i-1, i): fpr + t (dfpr) = fnr + t (dfnr)
    t = (fnr[i - 1] - fpr[i - 1]) / ((fpr[i] - fpr[i - 1]) - (fnr[i] - fnr[i - 1]))
    assert equal_error_rate(labels, scores) == pytest.approx(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    assert 0 < equal_error_rate(labels, scores) < 0.5


def test_eer_is_zero_for_separated_scores_and_one_half_for_identical_ones():
    labels = np.array([0, 0, 1, 1])
    assert equal_error_rate(labels, np.array([0.0, 1.0, 2.0, 3.0])) == 0.0
    assert equal_error_rate(labels, np.ones(4)) == pytest.approx(0.5)
    assert detection_at_false_alarm(labels, np.array([0.0, 1.0, 2.0, 3.0]), 0.0) == 1.0
