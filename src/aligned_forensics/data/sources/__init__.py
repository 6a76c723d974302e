"""Sources of real images. Each kind is one module with a `Config` dataclass and `plan(config, context)`;
kinds that download archives also have `remote_files(config)`.

Adding a kind means adding a module and one entry in SOURCE_KINDS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aligned_forensics.common.download import RemoteFile
from aligned_forensics.common.errors import ParamsError
from aligned_forensics.common.params import build_config
from aligned_forensics.common.splits import Split
from aligned_forensics.data.sources import archive, coco, folder, lsun, procedural, samples
from aligned_forensics.data.sources.common import LoadedImage, SourceContext


@dataclass(frozen=True)
class PlannedImage:
    """One real image a source will produce: where it goes and how to get its encoded bytes."""

    stem: str  # unique across all sources; the pairing key for its reconstruction
    split: Split
    source: str  # e.g. "samples", "coco/train", "lsun/bedroom/train"
    origin: str  # provenance a human can check, e.g. "train2017.zip:train2017/000000000009.jpg"
    load: Callable[[], LoadedImage]
    bytes: int = 0  # size of the original encoded image when known before loading (for dry runs)


SOURCE_KINDS: dict[str, Any] = {"samples": samples, "folder": folder, "coco": coco, "lsun": lsun,
                                "archive": archive, "procedural": procedural}


def source_config(spec: Mapping[str, Any], *, key: str) -> Any:
    """Validate one `fetch.sources` entry into its kind's Config."""
    kind = spec.get("kind")
    if kind not in SOURCE_KINDS:
        raise ParamsError(f"params key '{key}.kind': expected one of {sorted(SOURCE_KINDS)}, got {kind!r}")
    try:
        return build_config(SOURCE_KINDS[kind].Config, spec, section=key)
    except ParamsError as error:  # range checks in __post_init__ only know the kind, not the list index
        raise ParamsError(str(error).replace(f"fetch.sources[{kind}]", key)) from None


def source_remote_files(config: Any) -> list[RemoteFile]:
    """The archives a source downloads (none for local kinds)."""
    module = SOURCE_KINDS[config.kind]
    return module.remote_files(config) if hasattr(module, "remote_files") else []


def plan_source(config: Any, context: SourceContext) -> list[PlannedImage]:
    """List the images one source will produce (downloading its archives first unless a dry run)."""
    return [PlannedImage(**item) for item in SOURCE_KINDS[config.kind].plan(config, context)]
