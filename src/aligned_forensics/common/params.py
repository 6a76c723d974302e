"""Read one params.yaml section into a frozen dataclass, failing early with the key's name.

Rules for every section: numbers are finite (no .nan/.inf) and every key named `seed` is an integer >= 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from aligned_forensics.common import presets
from aligned_forensics.common.errors import ParamsError

T = TypeVar("T")


def load_section(params_path: Path, section: str) -> dict[str, Any]:
    """Return `section` of a params file (safe YAML), or raise ParamsError naming the file."""
    try:
        document = yaml.safe_load(Path(params_path).read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{params_path}: file not found (run from the repository root)") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{params_path}: not valid YAML: {error}") from None
    if isinstance(document, Mapping) and "extends" in document:
        document = _resolve_preset(Path(params_path))
    if section not in document:
        raise ParamsError(f"{params_path}: section '{section}' is missing; write a complete file with "
                          "`aligned-forensics preset presets/<name>.yaml` or copy the section from docs/params.md")
    values = document[section]
    if not isinstance(values, Mapping):
        raise ParamsError(f"{params_path}: section '{section}' must be a mapping, got {values!r}")
    return dict(values)


def _resolve_preset(path: Path) -> dict[str, Any]:
    """A preset (a file with `extends`) merged over its base, so `--params presets/paper.yaml` works in any stage."""
    if path.name == "params.yaml":
        # DVC hashes only the keys written in params.yaml: a change in the extended file would rerun nothing
        raise ParamsError(f"{path}: uses 'extends', but params.yaml must be complete because DVC tracks only the "
                          "keys written in it; write it whole with `aligned-forensics preset PRESET` instead")
    return presets.resolve(path).document


def build_config(cls: type[T], values: Mapping[str, Any], *, section: str) -> T:
    """Build dataclass `cls` from `values`; unknown keys, wrong types and missing keys raise ParamsError."""
    fields = {field.name: field for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
            raise ParamsError(
                f"unknown params key '{section}.{key}'{hint}; expected keys: {', '.join(sorted(fields))}"
            )
    hints = typing.get_type_hints(cls)
    converted: dict[str, Any] = {}
    for name, field in fields.items():
        if name in values:
            converted[name] = _convert(values[name], hints[name], f"{section}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamsError(f"params key '{section}.{name}' is required ({_describe(hints[name])})")
    return cls(**converted)


def require(condition: bool, key: str, expected: str, actual: object) -> None:
    """Raise ParamsError for `key` unless `condition` holds (value-range checks in __post_init__)."""
    if not condition:
        raise ParamsError(f"params key '{key}': expected {expected}, got {actual!r}")


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"params key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ParamsError:
                continue
        raise ParamsError(f"params key '{key}': expected {_describe(hint)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"params key '{key}': expected a list ({_describe(hint)}), got {value!r}")
        item_hint = args[0] if args else Any
        return tuple(_convert(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"params key '{key}': expected a mapping, got {value!r}")
        value_hint = args[1] if args else Any
        return {k: _convert(v, value_hint, f"{key}.{k}") for k, v in value.items()}  # a plain dict: asdict, pickle
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ParamsError(f"params key '{key}': expected a mapping of {hint.__name__} keys, got {value!r}")
        return build_config(hint, value, section=key)
    return _convert_scalar(value, hint, key)


def _convert_scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params key '{key}': expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params key '{key}': expected an integer, got {value!r}")
        if key.rsplit(".", 1)[-1] == "seed" and value < 0:  # numpy's SeedSequence fails on it mid-run
            raise ParamsError(f"params key '{key}': expected an integer >= 0, got {value!r}")
        return value
    if hint is float:
        # YAML reads `1e-4` as a string (YAML 1.1); accept it since users write it that way.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: reported just below
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"params key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan/.inf: no key means anything by them
            raise ParamsError(f"params key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"params key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type hint {hint!r} for '{key}'")  # a bug in a config class


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
