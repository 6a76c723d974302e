"""Seeded random mutations of every params section (wrong types, unknown keys, impossible values) must fail at
start-up with a ParamsError naming the full key; a stage given one exits with code 2 before writing anything."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import random
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Union

import pytest
import yaml

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig
from aligned_forensics.autoencoder.reconstruct import ReconstructConfig
from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import build_config
from aligned_forensics.data.fetch import FetchConfig
from aligned_forensics.data.manifest import ManifestConfig
from aligned_forensics.data.sources import source_config
from aligned_forensics.evaluation.evaluate import EvaluateConfig
from aligned_forensics.evaluation.report import ReportConfig
from aligned_forensics.evaluation.threshold import ThresholdConfig
from aligned_forensics.training.train import TrainConfig
from tests.conftest import REPO_ROOT, TINY_PARAMS
from tests.stages.conftest import stage_main

SEED = 20250611
Path_ = tuple[str | int, ...]  # a key path inside a section: names and list indices

SOURCE_SPECS = {  # one valid entry per source kind (the rest of its keys take their defaults)
    "samples": TINY_PARAMS["fetch"]["sources"][0],
    "folder": {"kind": "folder", "path": "photos"},
    "coco": {"kind": "coco", "split": "val"},
    "lsun": {"kind": "lsun", "category": "bedroom", "split": "train"},
    "archive": {"kind": "archive", "path": "photos.tar.gz"},
    "procedural": {"kind": "procedural", "count": 8},
}
STAGE_SECTIONS: dict[str, type] = {"autoencoder": AutoencoderConfig, "reconstruct": ReconstructConfig,
                                   "manifest": ManifestConfig, "train": TrainConfig, "threshold": ThresholdConfig,
                                   "evaluate": EvaluateConfig, "report": ReportConfig}
# Keys where a negative integer is meaningful (none today: seeds must be >= 0 for numpy's SeedSequence).
NEGATIVE_INTS_ALLOWED: set[str] = set()


def optional_sections() -> dict[str, type]:
    """Sections whose config class is still being added (found by import, skipped when absent)."""
    try:
        return {"stay_positive": importlib.import_module("aligned_forensics.training.stay_positive").StayPositiveConfig}
    except (ImportError, AttributeError):
        return {}


def baselines() -> dict[str, tuple[Callable[[dict[str, Any]], object], dict[str, Any]]]:
    """section name -> (validator, a complete valid value for it: every key spelled out)."""
    cases: dict[str, tuple[Callable[[dict[str, Any]], object], dict[str, Any]]] = {}
    for kind, spec in SOURCE_SPECS.items():
        full = plain(dataclasses.asdict(source_config(spec, key="fetch.sources[0]")))
        cases[f"fetch/{kind}"] = (validate_fetch, {"seed": 0, "sources": [full]})
    params = dict(TINY_PARAMS, evaluate=dict(TINY_PARAMS["evaluate"], test_sets=[
        {"name": "test", "split": "test"}, {"name": "bench", "real": "bench/real", "fake": "bench/fake"}]))
    for section, cls in {**STAGE_SECTIONS, **optional_sections()}.items():
        values = params.get(section, {})
        full = plain(dataclasses.asdict(build_config(cls, values, section=section)))
        cases[section] = (lambda v, cls=cls, section=section: build_config(cls, v, section=section), full)
    return cases


def validate_fetch(values: dict[str, Any]) -> object:
    """What the fetch stage checks at start-up: the section, then every source entry."""
    config = build_config(FetchConfig, values, section="fetch")
    return config.source_configs()


def plain(value: Any) -> Any:
    """asdict output as YAML would give it: lists, not tuples; dicts, not mapping proxies."""
    if isinstance(value, Mapping | types.MappingProxyType):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def leaves(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every (path, scalar) in a nested value, lists included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        yield path, value
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path, value


def mappings(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every path that holds a mapping (where an unknown key can be added)."""
    if isinstance(value, dict):
        yield path
        for key, item in value.items():
            yield from mappings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from mappings(item, (*path, index))


def with_value(values: Any, path: Path_, new: Any) -> Any:
    """A deep copy of `values` with the item at `path` replaced."""
    if not path:
        return new
    copy = list(values) if isinstance(values, list) else dict(values)
    copy[path[0]] = with_value(values[path[0]], path[1:], new)
    return copy


def wrong_types(value: Any, rng: random.Random) -> list[Any]:
    """Values of another type than `value` (bools are not numbers; numbers are not strings)."""
    if isinstance(value, bool):
        pool = [1, "yes", [True]]
    elif isinstance(value, int):
        pool = ["3", 2.5, True, [1]]
    elif isinstance(value, float):
        pool = ["fast", True, [0.5], {"x": 1}]
    elif isinstance(value, str):
        pool = [5, 1.5, True, ["a"]]
    elif isinstance(value, list):
        pool = [3, "a,b", {"x": 1}]
    elif value is None:  # optional keys (a source's own seed): not a number
        pool = ["soon", [1]]
    else:
        pool = [object()]
    return rng.sample(pool, k=min(2, len(pool)))


def impossible(value: Any, key: str) -> list[Any]:
    """Values no key of this type can mean: NaN and infinities for numbers, negatives for integers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return []
    if isinstance(value, float):
        return [math.nan, math.inf, -math.inf]
    return [] if key in NEGATIVE_INTS_ALLOWED else [-1, -(10**9)]


def dotted(section: str, path: Path_) -> str:
    return section + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def field_parts(section: str, path: Path_) -> tuple[str, str]:
    """(parent key, field name) of the named field a path ends in: list indices belong to their field."""
    while path and isinstance(path[-1], int):
        path = path[:-1]
    return dotted(section, path[:-1]), str(path[-1])


def names_key(message: str, section: str, path: Path_) -> bool:
    """True when the message names the field's full key (alone, or in a check of two keys like 'a.x/y')."""
    parent, name = field_parts(section, path)
    together = rf"'{re.escape(parent)}\.[\w/ +]*\b{name}\b"  # e.g. 'train.beta1/beta2' names train.beta2
    return f"'{parent}.{name}" in message or re.search(together, message) is not None


def mutations(seed: int) -> Iterator[tuple[str, str, Path_, Any, Any]]:
    """(case, section, path, mutated values, what was set) for every leaf and mapping of every section."""
    rng = random.Random(seed)
    for case, (_, valid) in sorted(baselines().items()):
        section = case.split("/")[0]
        for path, value in leaves(valid):
            if not path or (section == "fetch" and path[-1] == "kind"):  # kind selects the class; tested below
                continue
            for new in wrong_types(value, rng) + impossible(value, dotted(section, path)):
                if not _acceptable_type_change(value, new):
                    yield case, section, path, with_value(valid, path, new), new
        for path in mappings(valid):
            key = f"bogus_{rng.randrange(10**6)}"
            yield case, section, (*path, key), with_value(valid, path, {**_at(valid, path), key: 1}), key


def _at(values: Any, path: Path_) -> Any:
    for part in path:
        values = values[part]
    return values


def _acceptable_type_change(old: Any, new: Any) -> bool:
    """An int where a float is expected is a number (YAML writes 1 for 1.0): not a mutation."""
    return isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool)


MUTATIONS = list(mutations(SEED))


def test_the_fuzz_covers_every_section_and_many_keys():
    sections = {case for case, *_ in MUTATIONS}
    assert {"fetch/samples", "fetch/folder", "fetch/coco", "fetch/lsun", "fetch/archive", "fetch/procedural",
            "autoencoder", "reconstruct", "manifest", "train", "threshold", "evaluate", "report"} <= sections
    assert set(optional_sections()) <= sections
    assert len(MUTATIONS) > 400
    assert any(path[:2] == ("augment", "crop_size") for _, section, path, *_ in MUTATIONS if section == "train")


@pytest.mark.parametrize("case", sorted({case for case, *_ in MUTATIONS}))
def test_every_mutation_fails_at_start_up_naming_the_full_key(case):
    validate = baselines()[case][0]
    accepted, unnamed = [], []
    for _, section, path, values, new in (m for m in MUTATIONS if m[0] == case):
        try:
            validate(values)
        except ParamsError as error:
            if not names_key(str(error), section, path):
                unnamed.append(f"{dotted(section, path)} = {new!r}: {error}")
        else:
            accepted.append(f"{dotted(section, path)} = {new!r}")
    assert not accepted, f"{len(accepted)} invalid value(s) accepted:\n" + "\n".join(accepted)
    assert not unnamed, f"{len(unnamed)} error(s) do not name the full key:\n" + "\n".join(unnamed)


@pytest.mark.parametrize("section", ["fetch", *STAGE_SECTIONS, *(
    section for section in optional_sections() if (REPO_ROOT / "stages" / f"{section}.py").is_file())])
def test_a_stage_given_a_mutation_exits_2_before_writing_anything(section, tmp_path, monkeypatch, caplog):
    rng = random.Random(f"{SEED}:{section}")
    candidates = [m for m in MUTATIONS if m[1] == section and not str(m[4]).startswith("bogus_")]
    _, _, path, values, _ = rng.choice(candidates)
    params = dict(TINY_PARAMS, **{section: values})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert stage_main(section)([]) == 2
    assert names_key(caplog.text, section, path), caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "a failed start-up wrote files"


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "flickr"}, r"'fetch.sources\[0\].kind': expected one of"),
    ({}, r"'fetch.sources\[0\].kind': expected one of"),
])
def test_an_unknown_source_kind_names_the_entry(spec, message):
    with pytest.raises(ParamsError, match=message):
        validate_fetch({"seed": 0, "sources": [spec]})


def _literal_fields() -> Iterator[tuple[str, type, str]]:
    for section, cls in STAGE_SECTIONS.items():
        for field in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[field.name]
            if typing.get_origin(hint) is Literal or typing.get_origin(hint) in (Union, types.UnionType):
                yield section, cls, field.name


@pytest.mark.parametrize(("section", "cls", "name"), list(_literal_fields()))
def test_choices_reject_values_outside_the_list(section, cls, name):
    values = dict(TINY_PARAMS.get(section, {}), **{name: "no-such-choice"})
    with pytest.raises(ParamsError, match=rf"'{section}\.{name}'"):
        build_config(cls, values, section=section)
