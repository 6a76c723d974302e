"""The stage tests' shared workspace: every stage run once, in order, on the tiny params (built once per session)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("fetch", "autoencoder", "reconstruct", "manifest", "train", "threshold", "evaluate", "report")


def stage_main(name: str):
    """A stage script's main(), imported from its file."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A folder where every stage has run once, in order, with the tiny params."""
    from tests.conftest import TINY_PARAMS

    folder = tmp_path_factory.mktemp("stages")
    (folder / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    previous = os.getcwd()
    os.chdir(folder)  # stages take repo-relative default paths, as under `dvc repro`
    try:
        for name in ORDER:
            assert stage_main(name)([]) == 0, name
    finally:
        os.chdir(previous)
    return folder


