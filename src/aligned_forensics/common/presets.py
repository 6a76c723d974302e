"""Presets: params files that hold only what differs from another file they name with `extends`.

Merging rule: mappings merge key by key, recursively; anything else (a list, a string, a number, null) replaces the
base's value whole, so `fetch.sources` is always replaced as one list. A preset may only override keys its base
has: a misspelt or unknown key fails with its dotted name instead of being added. The preset at the root of the
chain (no `extends`) is complete. The merged result is validated by building every stage's config dataclass.
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.io import atomic_write_text

EXTENDS = "extends"
# The first line of every file this module writes; such a file is an output, so no preset may extend it.
GENERATED_MARK = "# Written by `aligned-forensics preset"

# Each params.yaml section and the config its stage builds from it (stages/*.py: load_config(params, section, X)).
# Imported by name, when validating, because most of them import torch.
STAGE_CONFIGS = {
    "fetch": "aligned_forensics.data.fetch:FetchConfig",
    "autoencoder": "aligned_forensics.autoencoder.autoencoder:AutoencoderConfig",
    "reconstruct": "aligned_forensics.autoencoder.reconstruct:ReconstructConfig",
    "manifest": "aligned_forensics.data.manifest:ManifestConfig",
    "train": "aligned_forensics.training.train:TrainConfig",
    "stay_positive": "aligned_forensics.training.stay_positive:StayPositiveConfig",
    "threshold": "aligned_forensics.evaluation.threshold:ThresholdConfig",
    "evaluate": "aligned_forensics.evaluation.evaluate:EvaluateConfig",
    "reference": "aligned_forensics.evaluation.reference:ReferenceConfig",
    "report": "aligned_forensics.evaluation.report:ReportConfig",
}


@dataclass(frozen=True)
class Resolved:
    """A preset merged over everything it extends."""

    document: dict[str, Any]  # the complete params, without `extends`
    chain: tuple[Path, ...]  # the preset first, the complete root last

    def describe(self) -> str:
        """`a.yaml over b.yaml over c.yaml`, for messages and the written header."""
        return " over ".join(display(path) for path in self.chain)


def display(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it (shorter messages), else as given."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> dict[str, Any]:
    """One preset or params file as a mapping (safe YAML), or ParamsError naming the file and the fix."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ParamsError(f"{display(path)}: file not found (presets live in presets/, e.g. presets/paper.yaml)") \
            from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{display(path)}: not valid YAML: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ParamsError(f"{display(path)}: expected a mapping of params sections, got {type(document).__name__}")
    return dict(document)


def merge(base: Mapping[str, Any], delta: Mapping[str, Any], *, base_name: str, delta_name: str,
          prefix: str = "") -> dict[str, Any]:
    """`delta` over `base`: mappings merge recursively, other values replace whole; unknown keys raise ParamsError."""
    merged = copy.deepcopy(dict(base))
    for key, value in delta.items():
        name = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ParamsError(f"{delta_name}: key '{name}' is not in {base_name}{hint}; a preset only changes keys "
                              "its base already has: fix the spelling (a new key goes into the root preset first)")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            merged[key] = merge(base[key], value, base_name=base_name, delta_name=delta_name, prefix=f"{name}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve(path: Path) -> Resolved:
    """Read the preset at `path` and merge it over the chain it extends (a cycle raises ParamsError)."""
    return _resolve(Path(path), ())


def _resolve(path: Path, seen: tuple[Path, ...]) -> Resolved:
    key = path.resolve()
    if key in seen:
        cycle = " -> ".join(display(p) for p in (*seen[seen.index(key):], key))
        raise ParamsError(f"{display(seen[-1])}: 'extends' makes a cycle ({cycle}); the last preset of a chain "
                          "must be complete, without 'extends'")
    document = read_yaml(path)
    parent = document.pop(EXTENDS, None)
    if parent is None:
        return Resolved(document=document, chain=(path,))
    if not isinstance(parent, str) or not parent:
        raise ParamsError(f"{display(path)}: 'extends' must name one preset file (a path relative to "
                          f"{display(path.parent)}/), got {parent!r}")
    target = path.parent / parent
    if not target.is_file():
        raise ParamsError(f"{display(path)}: extends '{parent}', but {display(target)} does not exist; name a file "
                          f"relative to {display(path.parent)}/, e.g. 'extends: paper-sync.yaml'")
    if target.read_text().startswith(GENERATED_MARK):
        raise ParamsError(f"{display(path)}: extends {display(target)}, which `aligned-forensics preset` wrote (it "
                          "is overwritten whenever a preset is applied); extend the preset named in its first line")
    base = _resolve(target, (*seen, key))
    merged = merge(base.document, document, base_name=base.describe(), delta_name=display(path))
    return Resolved(document=merged, chain=(path, *base.chain))


def stage_config_classes() -> dict[str, type]:
    """Every section's config dataclass (imports the stage modules, hence torch)."""
    classes = {}
    for section, target in STAGE_CONFIGS.items():
        module, name = target.split(":")
        classes[section] = getattr(importlib.import_module(module), name)
    return classes


def validate(resolved: Resolved) -> dict[str, Any]:
    """Build every stage's config from the merged document; return them by section, or raise ParamsError."""
    # params.py imports this module (so stages read `--params presets/X.yaml`): importing it at the top is a cycle
    from aligned_forensics.common.params import build_config

    document = resolved.document
    missing = [section for section in STAGE_CONFIGS if section not in document]
    unknown = [str(section) for section in document if section not in STAGE_CONFIGS]
    if missing or unknown:
        found = [f"missing {', '.join(missing)}"] if missing else []
        for section in unknown:
            close = difflib.get_close_matches(section, list(STAGE_CONFIGS), n=1)
            found.append(f"unknown '{section}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ParamsError(f"{resolved.describe()}: expected the sections {', '.join(STAGE_CONFIGS)}, got "
                          f"{'; '.join(found)}; the root preset (no 'extends') must hold every section")
    configs = {}
    for section, config_class in stage_config_classes().items():
        values = document[section]
        if not isinstance(values, Mapping):
            raise ParamsError(f"{resolved.describe()}: section '{section}' must be a mapping, got {values!r}")
        try:
            configs[section] = build_config(config_class, values, section=section)
            if section == "fetch":  # each source entry is checked by its kind's own config, not by FetchConfig
                configs[section].source_configs()
        except ParamsError as error:
            raise ParamsError(f"{resolved.describe()}: {error}") from None
    return configs


class _Dumper(yaml.SafeDumper):
    """Block mappings, lists indented under their key, short lists of scalars on one line: like params.yaml."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value used twice (a YAML alias in a preset) is written out twice, never as &id001


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, Mapping | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def render(resolved: Resolved, *, preset_arg: str) -> str:
    """The complete params text: a header naming the preset, then each section, separated by blank lines."""
    header = (f"{GENERATED_MARK} {preset_arg}`: {resolved.describe()},\n"
              "# merged and validated. Edit keys here (or `dvc exp run -S section.key=value`), or change the preset\n"
              "# and apply it again; every key is explained in those preset files and in docs/params.md.\n")
    sections = [yaml.dump({section: values}, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
                for section, values in resolved.document.items()]
    text = header + "\n".join(sections)
    if yaml.safe_load(text) != resolved.document:  # the dumper's styling must never change a value
        raise RuntimeError(f"{resolved.describe()}: the written YAML would not read back identically (a bug in "
                           "presets.render; please report it with the preset)")
    return text


def apply_preset(preset: Path, out: Path, *, preset_arg: str | None = None, check_only: bool = False) -> Resolved:
    """Resolve and validate `preset`; unless `check_only`, write the complete params to `out` atomically."""
    resolved = resolve(preset)
    validate(resolved)
    if not check_only:
        atomic_write_text(out, render(resolved, preset_arg=preset_arg or display(preset)))
    return resolved
