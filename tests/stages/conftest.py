"""The stage tests' shared workspace: every stage run once, in order, on the tiny params (built once per session)."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def pipeline_commands() -> list[tuple[str, str, list[str]]]:
    """(stage, script, argv) of every dvc.yaml stage in file order (pipeline order), exactly as DVC runs them."""
    from tests.projects import resolved_stages

    stages = resolved_stages()
    commands = []
    for name, stage in stages.items():
        words = shlex.split(stage["cmd"])  # python stages/<script>.py --flag value ...
        commands.append((name, Path(words[1]).stem, words[2:]))
    return commands


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
        for name, script, argv in pipeline_commands():
            assert stage_main(script)(argv) == 0, name
    finally:
        os.chdir(previous)
    return folder


