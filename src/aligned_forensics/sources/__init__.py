"""Sources of real images. Each kind is one module with a `Config` dataclass and `plan(config, *, seed)`.

Adding a kind (coco, lsun, ...) means adding a module and one entry in SOURCE_KINDS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aligned_forensics.errors import ParamsError
from aligned_forensics.params import build_config
from aligned_forensics.sources import folder, samples
from aligned_forensics.splits import Split


@dataclass(frozen=True)
class PlannedImage:
    """One real image a source will produce: where it goes and how to get its encoded bytes."""

    stem: str  # unique across all sources; the pairing key for its reconstruction
    split: Split
    source: str  # e.g. "samples"
    origin: str  # provenance a human can check, e.g. "skimage/astronaut.png crop x=8 y=40 w=96 h=64"
    load: Callable[[], tuple[bytes, str]]  # -> (encoded bytes, suffix such as ".jpg")


SOURCE_KINDS: dict[str, Any] = {"samples": samples, "folder": folder}


def plan_source(spec: Mapping[str, Any], *, seed: int, key: str) -> list[PlannedImage]:
    """Validate one `fetch.sources` entry and list the images it will produce."""
    kind = spec.get("kind")
    if kind not in SOURCE_KINDS:
        raise ParamsError(f"params key '{key}.kind': expected one of {sorted(SOURCE_KINDS)}, got {kind!r}")
    module = SOURCE_KINDS[kind]
    config = build_config(module.Config, spec, section=key)
    return [PlannedImage(**item) for item in module.plan(config, seed=seed)]
