"""Presets: deltas over the preset they extend, merged, validated and written whole as params.yaml."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from aligned_forensics.common.cli import load_config
from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import load_section
from aligned_forensics.common.presets import (
    GENERATED_MARK,
    STAGE_CONFIGS,
    apply_preset,
    merge,
    resolve,
    stage_config_classes,
    validate,
)
from tests.conftest import REPO_ROOT

PRESETS = sorted((REPO_ROOT / "presets").glob("*.yaml"))
PRESET_IDS = [path.stem for path in PRESETS]
VAE_PRESETS = ["sd-vae", "sd3-vae", "flux-vae"]


def key_tree(node: object, prefix: str = "") -> set[str]:
    """Every mapping key's dotted name (list items are values, not keys)."""
    if not isinstance(node, dict):
        return set()
    return {name for key, value in node.items()
            for name in (f"{prefix}{key}", *key_tree(value, f"{prefix}{key}."))}


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A complete root preset in tmp_path (the repository's paper-sync)."""
    return write(tmp_path / "root.yaml", resolve(REPO_ROOT / "presets" / "paper-sync.yaml").document)


def test_there_are_presets_and_all_but_the_root_extend_another():
    assert {"paper-sync", "paper", *VAE_PRESETS} <= set(PRESET_IDS)
    roots = [path.stem for path in PRESETS if "extends" not in yaml.safe_load(path.read_text())]
    assert roots == ["paper-sync"]


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_each_preset_is_complete_and_every_stage_config_builds(preset):
    resolved = resolve(preset)
    configs = validate(resolved)
    assert set(configs) == set(STAGE_CONFIGS)
    demo = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert list(resolved.document) == list(demo), "the same sections as params.yaml, in its order"
    # a key added to params.yaml (the demo) must be given its real-run value in the root preset too
    assert key_tree(resolved.document) == key_tree(demo)


@pytest.mark.parametrize("preset", PRESETS, ids=PRESET_IDS)
def test_the_written_params_file_round_trips_and_every_stage_loads_it(preset, tmp_path):
    out = tmp_path / "params.yaml"
    resolved = apply_preset(preset, out, preset_arg=f"presets/{preset.name}")
    text = out.read_text()
    assert text.startswith(f"{GENERATED_MARK} presets/{preset.name}`")
    assert yaml.safe_load(text) == resolved.document
    for section, config_class in stage_config_classes().items():
        assert load_config(out, section, config_class) == validate(resolved)[section]
    apply_preset(preset, tmp_path / "again.yaml", preset_arg=f"presets/{preset.name}")
    assert (tmp_path / "again.yaml").read_text() == text, "applying a preset twice writes the same bytes"
    assert not list(tmp_path.glob("*.partial")), "written through a temp file that is renamed"


@pytest.mark.parametrize("preset", VAE_PRESETS)
def test_autoencoder_presets_differ_from_paper_sync_only_in_the_autoencoder(repo_root, preset):
    delta = yaml.safe_load((repo_root / "presets" / f"{preset}.yaml").read_text())
    assert set(delta) == {"extends", "autoencoder"} and delta["extends"] == "paper-sync.yaml"
    ours = resolve(repo_root / "presets" / f"{preset}.yaml").document
    paper = resolve(repo_root / "presets" / "paper-sync.yaml").document
    assert {key: value for key, value in ours.items() if key != "autoencoder"} == \
        {key: value for key, value in paper.items() if key != "autoencoder"}
    assert ours["autoencoder"]["kind"] == "hub" and ours["autoencoder"]["id"] != paper["autoencoder"]["id"]


def test_paper_differs_from_paper_sync_in_unsynced_batches(repo_root):
    ours = resolve(repo_root / "presets" / "paper.yaml").document
    paper = resolve(repo_root / "presets" / "paper-sync.yaml").document
    assert (ours["train"]["sync"], ours["train"]["batch_size"], ours["stay_positive"]["sync"]) == (False, 128, False)
    for section in ("train", "stay_positive"):
        ours[section] = {k: v for k, v in ours[section].items() if k not in ("sync", "batch_size")}
        paper[section] = {k: v for k, v in paper[section].items() if k not in ("sync", "batch_size")}
    assert ours == paper


def test_paper_sync_format_aligned_differs_only_in_the_fakes_format_and_coco_keeping_its_jpeg_bytes(repo_root):
    ours = resolve(repo_root / "presets" / "paper-sync-format-aligned.yaml").document
    paper = resolve(repo_root / "presets" / "paper-sync.yaml").document
    assert (ours["reconstruct"]["format"], paper["reconstruct"]["format"]) == ("match", "png")
    assert [source["multiple_of"] for source in ours["fetch"]["sources"] if source["kind"] == "coco"] == [0, 0]
    ours["reconstruct"]["format"] = "png"
    for source in ours["fetch"]["sources"]:
        source["multiple_of"] = 8 if source["kind"] == "coco" else source["multiple_of"]
    assert ours == paper, "a change to paper-sync.yaml's sources must be copied into the format-aligned preset"


def test_paper_roundtrip_is_the_format_aligned_preset_with_the_roundtrip_input_run_on_every_crop(repo_root):
    delta = yaml.safe_load((repo_root / "presets" / "paper-roundtrip.yaml").read_text())
    assert delta["extends"] == "paper-sync-format-aligned.yaml"  # deltas chain: over it, over paper-sync
    ours = resolve(repo_root / "presets" / "paper-roundtrip.yaml")
    base = resolve(repo_root / "presets" / "paper-sync-format-aligned.yaml").document
    assert [path.name for path in ours.chain] == ["paper-roundtrip.yaml", "paper-sync-format-aligned.yaml",
                                                  "paper-sync.yaml"]
    train = ours.document["train"]
    assert (train["arch"], train["pretrained"], train["input_filter"]) == ("res50nodown", "imagenet", "roundtrip")
    # the paper's augmentation changes pixel values: filter_once would be refused at start-up
    assert not train["filter_once"] and train["augment"]["jitter_prob"] > 0 and train["augment"]["jpeg_prob"] > 0
    ours.document["train"]["input_filter"] = base["train"]["input_filter"]
    assert ours.document == base


def test_mappings_merge_recursively_and_lists_and_scalars_replace_whole():
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}, "items": [1, 2, 3]}, "f": "x", "g": {"h": 1}}
    delta = {"a": {"c": {"e": 30}, "items": [9]}, "f": "y", "g": None}
    merged = merge(base, delta, base_name="base.yaml", delta_name="delta.yaml")
    assert merged == {"a": {"b": 1, "c": {"d": 2, "e": 30}, "items": [9]}, "f": "y", "g": None}
    assert base["a"]["c"]["e"] == 3 and base["a"]["items"] == [1, 2, 3], "the base is not modified"
    merged["a"]["items"].append(10)
    assert delta["a"]["items"] == [9], "the result shares nothing with the delta"


def test_a_list_of_sources_is_replaced_as_a_whole(root, tmp_path):
    source = {"kind": "samples", "crops_per_photo": 4, "min_side": 32, "max_side": 48, "val_groups": 2,
              "test_groups": 2, "jpeg_quality": 90}
    preset = write(tmp_path / "local.yaml", {"extends": "root.yaml", "fetch": {"sources": [source]}})
    resolved = resolve(preset)
    assert resolved.document["fetch"] == {"seed": 0, "sources": [source], "watch": "stages/fetch.py"}
    validate(resolved)


@pytest.mark.parametrize(("delta", "match"), [
    ({"train": {"lrr": 1.0}}, r"local\.yaml: key 'train\.lrr' is not in .*root\.yaml \(did you mean 'train\.lr'\?\)"),
    ({"train": {"augment": {"crop_sise": 64}}}, r"key 'train\.augment\.crop_sise' is not in"),
    ({"trian": {"lr": 1.0}}, r"key 'trian' is not in .*did you mean 'train'"),
])
def test_a_key_the_base_does_not_have_fails_with_its_full_name(root, tmp_path, delta, match):
    preset = write(tmp_path / "local.yaml", {"extends": "root.yaml", **delta})
    with pytest.raises(ParamsError, match=match):
        resolve(preset)


@pytest.mark.parametrize(("delta", "match"), [
    ({"train": {"lr": "fast"}}, r"local\.yaml over .*root\.yaml: params key 'train\.lr': expected a number"),
    ({"reconstruct": {"sample": "median"}}, r"'reconstruct\.sample'"),
    ({"fetch": {"sources": [{"kind": "samples", "crops": 3}]}}, r"unknown params key 'fetch\.sources\[0\]\.crops'"),
    ({"evaluate": {"sweeps": None}}, r"evaluate\.sweeps"),
])
def test_a_wrong_value_fails_validation_naming_the_key_and_the_files(root, tmp_path, delta, match):
    resolved = resolve(write(tmp_path / "local.yaml", {"extends": "root.yaml", **delta}))
    with pytest.raises(ParamsError, match=match):
        validate(resolved)


def test_a_root_preset_missing_a_section_or_with_an_unknown_one_fails(root, tmp_path):
    document = yaml.safe_load(root.read_text())
    document["trian"] = document.pop("train")
    with pytest.raises(ParamsError, match=r"missing train; unknown 'trian' \(did you mean 'train'\?\)"):
        validate(resolve(write(tmp_path / "broken.yaml", document)))


def test_extends_cycles_are_refused(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml", "train": {"lr": 1.0}})
    write(tmp_path / "b.yaml", {"extends": "a.yaml", "train": {"lr": 2.0}})
    with pytest.raises(ParamsError, match=r"cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"):
        resolve(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", {"extends": "self.yaml"})
    with pytest.raises(ParamsError, match="cycle"):
        resolve(tmp_path / "self.yaml")


@pytest.mark.parametrize(("extends", "match"), [
    ("missing.yaml", r"extends 'missing\.yaml', but .*missing\.yaml does not exist"),
    (["root.yaml"], r"'extends' must name one preset file"),
    ("", r"'extends' must name one preset file"),
])
def test_a_bad_extends_names_the_file_and_the_fix(root, tmp_path, extends, match):
    with pytest.raises(ParamsError, match=match):
        resolve(write(tmp_path / "local.yaml", {"extends": extends}))


def test_a_written_params_file_cannot_be_extended(root, tmp_path):
    apply_preset(root, tmp_path / "written.yaml")
    resolve(write(tmp_path / "fine.yaml", {"extends": "root.yaml"}))
    with pytest.raises(ParamsError, match=r"written\.yaml, which `aligned-forensics preset` wrote"):
        resolve(write(tmp_path / "local.yaml", {"extends": "written.yaml"}))


def test_a_failed_apply_leaves_the_output_untouched(root, tmp_path):
    out = tmp_path / "params.yaml"
    out.write_text("previous: content\n")
    with pytest.raises(ParamsError):
        apply_preset(write(tmp_path / "local.yaml", {"extends": "root.yaml", "train": {"lr": "x"}}), out)
    assert out.read_text() == "previous: content\n"
    apply_preset(root, out, check_only=True)
    assert out.read_text() == "previous: content\n", "--check writes nothing"


def test_stages_read_a_preset_directly_but_params_yaml_must_be_complete(root, tmp_path, repo_root):
    assert load_section(repo_root / "presets" / "sd-vae.yaml", "autoencoder")["id"] == "stabilityai/sd-vae-ft-mse"
    params = write(tmp_path / "params.yaml", {"extends": "root.yaml"})
    with pytest.raises(ParamsError, match=r"params\.yaml must be complete because DVC tracks only the keys"):
        load_section(params, "train")


def stage_configs_in_stages() -> dict[str, str]:
    """section -> 'module:Class' from every `load_config(args.params, "section", Class)` call in stages/*.py."""
    found = {}
    for script in sorted((REPO_ROOT / "stages").glob("*.py")):
        tree = ast.parse(script.read_text())
        imported = {alias.asname or alias.name: f"{node.module}:{alias.name}"
                    for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_config":
                section, config_class = node.args[1], node.args[2]
                assert isinstance(section, ast.Constant) and isinstance(config_class, ast.Name), script
                found[section.value] = imported[config_class.id]
    return found


def test_presets_validate_every_section_a_stage_reads_with_the_stages_config():
    assert stage_configs_in_stages() == STAGE_CONFIGS


def test_a_value_shared_through_a_yaml_alias_is_written_out_in_full(root, tmp_path):
    (tmp_path / "alias.yaml").write_text("extends: root.yaml\nevaluate:\n  sweeps:\n    jpeg: &q [90, 50]\n"
                                         "    webp: *q\n")
    apply_preset(tmp_path / "alias.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text()
    assert "&" not in text and "*" not in text
    assert yaml.safe_load(text)["evaluate"]["sweeps"]["webp"] == [90, 50]
