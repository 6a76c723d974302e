from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig
from aligned_forensics.autoencoder.reconstruct import ReconstructConfig
from aligned_forensics.common.cli import load_config
from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import build_config, load_section
from aligned_forensics.data.fetch import FetchConfig
from aligned_forensics.data.manifest import ManifestConfig
from aligned_forensics.data.sources import plan_source, source_config
from aligned_forensics.data.sources.common import SourceContext
from aligned_forensics.evaluation.evaluate import EvaluateConfig
from aligned_forensics.evaluation.report import ReportConfig
from aligned_forensics.evaluation.threshold import ThresholdConfig
from aligned_forensics.training.stay_positive import StayPositiveConfig
from aligned_forensics.training.train import TrainConfig
from tests.conftest import REPO_ROOT

STAGE_CONFIGS = {"fetch": FetchConfig, "autoencoder": AutoencoderConfig, "reconstruct": ReconstructConfig,
                 "manifest": ManifestConfig, "train": TrainConfig, "threshold": ThresholdConfig,
                 "evaluate": EvaluateConfig, "stay_positive": StayPositiveConfig, "report": ReportConfig}


@dataclass(frozen=True)
class Inner:
    depth: int = 1


@dataclass(frozen=True)
class Example:
    name: str
    rate: float = 0.1
    count: int = 2
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_builds_with_defaults_and_converts_lists_to_tuples():
    config = build_config(Example, {"name": "x", "sizes": [3, 4], "rate": 1}, section="s")
    assert config == Example(name="x", sizes=(3, 4), rate=1.0)
    assert isinstance(config.rate, float)


def test_unknown_key_names_the_key_and_suggests_the_close_one():
    with pytest.raises(ParamsError, match=r"unknown params key 's\.cout'.*did you mean 's\.count'"):
        build_config(Example, {"name": "x", "cout": 3}, section="s")


def test_nested_unknown_key_has_the_full_dotted_name():
    with pytest.raises(ParamsError, match=r"'s\.inner\.deep'"):
        build_config(Example, {"name": "x", "inner": {"deep": 2}}, section="s")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("count", "3", "an integer"), ("count", 2.5, "an integer"), ("count", True, "an integer"),
    ("flag", 1, "true or false"), ("rate", "fast", "a number"), ("mode", "c", "one of"),
    ("sizes", 3, "a list"), ("sizes", ["x"], r"sizes\[0\]"), ("name", 5, "a string"),
])
def test_wrong_types_name_the_key_and_the_expectation(key, value, expected):
    values = {"name": "x", key: value}
    with pytest.raises(ParamsError, match=rf"'s\.{key}.*{expected}|{expected}"):
        build_config(Example, values, section="s")


def test_scientific_notation_strings_are_numbers():
    assert build_config(Example, {"name": "x", "rate": "1e-4"}, section="s").rate == pytest.approx(1e-4)


def test_missing_required_key():
    with pytest.raises(ParamsError, match=r"'s\.name' is required"):
        build_config(Example, {}, section="s")


def test_missing_section_and_bad_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: {lr: 1}\n")
    with pytest.raises(ParamsError, match="section 'fetch' is missing"):
        load_section(path, "fetch")
    path.write_text("train: [\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section(path, "train")


PRESETS = sorted(path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "presets").glob("*.yaml"))
PARAMS_FILES = ["params.yaml", *PRESETS]


@pytest.mark.parametrize("params_file", PARAMS_FILES)
def test_every_section_of_the_demo_and_presets_is_valid(repo_root, params_file):
    path = repo_root / params_file
    for section, config_class in STAGE_CONFIGS.items():
        config = load_config(path, section, config_class)
        assert config is not None
    fetch = load_config(path, "fetch", FetchConfig)
    for source in fetch.source_configs():  # every entry valid; local kinds also list their images
        if source.kind in ("samples", "folder"):
            assert plan_source(source, SourceContext(seed=fetch.seed, downloads=repo_root / "unused"))


@pytest.mark.parametrize("section", sorted(STAGE_CONFIGS))
def test_a_misspelt_key_in_any_section_fails_with_its_name(repo_root, tmp_path, section):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document[section]["sede"] = 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ParamsError, match=rf"unknown params key '{section}\.sede'"):
        load_config(path, section, STAGE_CONFIGS[section])


@pytest.mark.parametrize(("section", "key", "value", "match"), [
    ("train", "lr", -1.0, "train.lr"), ("train", "batch_size", 0, "train.batch_size"),
    ("train", "min_lr", 1.0, "train.min_lr"), ("reconstruct", "sample", "median", "reconstruct.sample"),
    ("threshold", "criterion", "best", "threshold.criterion"), ("threshold", "target_fpr", 2.0, "target_fpr"),
    ("autoencoder", "kind", "hub", "autoencoder.id"), ("train", "arch", "vit", "train.arch"),
])
def test_impossible_values_fail_at_start_up(repo_root, tmp_path, section, key, value, match):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    document[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ParamsError, match=match):
        load_config(path, section, STAGE_CONFIGS[section])


def test_unknown_source_kind_and_source_key(repo_root):
    with pytest.raises(ParamsError, match=r"fetch.sources\[0\].kind.*'samples'"):
        source_config({"kind": "imagenet"}, key="fetch.sources[0]")
    with pytest.raises(ParamsError, match=r"unknown params key 'fetch.sources\[0\].crops'"):
        source_config({"kind": "samples", "crops": 3}, key="fetch.sources[0]")
