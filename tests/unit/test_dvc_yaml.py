"""Lint dvc.yaml: the wiring the pipeline's correctness depends on."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC["stages"]


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _outs(stage: dict) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]


def _library_imports(path: Path, seen: set[str]) -> set[str]:
    """Every src/aligned_forensics file that `path` imports, transitively."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aligned_forensics"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("aligned_forensics")]
        for name in names:
            base = ROOT / "src" / Path(*name.split("."))
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                relative = candidate.relative_to(ROOT).as_posix()
                if candidate.is_file() and relative not in seen:
                    seen.add(relative)
                    _library_imports(candidate, seen)
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_script_and_every_library_module_it_imports_are_deps(name):
    stage = STAGES[name]
    script = re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)
    deps = _deps(stage)
    assert script in deps
    for module in sorted(_library_imports(ROOT / script, set())):
        assert module in deps or any(module.startswith(dep.rstrip("/") + "/") for dep in deps), \
            f"stage {name}: {module} is imported but not a dep (an edit to it would not re-run the stage)"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_declares_exactly_its_own_whole_section(name):
    """A stage reads the section named after its script (the stay-positive model's threshold and evaluate
    stages run the same scripts, with the same protocol, as the base model's)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    section = re.search(r"python stages/(\w+)\.py", STAGES[name]["cmd"]).group(1)
    assert STAGES[name]["params"] == [section] and section in params
    assert name == section or name == f"stay_positive_{section}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_path_in_cmd_is_a_dep_or_an_out(name):
    stage = STAGES[name]
    declared = set(_deps(stage)) | set(_outs(stage))
    for path in re.findall(r"(?:data|metrics)/[\w./-]+", stage["cmd"]):
        assert path in declared or any(path.startswith(d + "/") for d in declared), f"{name}: {path}"


def test_outputs_are_unique_and_metrics_and_plots_are_produced():
    outs = [out for stage in STAGES.values() for out in _outs(stage)]
    assert len(outs) == len(set(outs))
    produced = lambda path: any(path == out or path.startswith(out + "/") for out in outs)  # noqa: E731
    for path in DVC["metrics"]:
        assert produced(path), path
    for plot in DVC["plots"]:
        key, spec = (plot, None) if isinstance(plot, str) else next(iter(plot.items()))
        files = list(spec["y"]) if spec and isinstance(spec.get("y"), dict) else [key]
        for path in files:
            assert produced(path), path


def test_small_metrics_live_in_git_not_the_cache():
    for stage in STAGES.values():
        for out in stage.get("outs", []):
            if isinstance(out, dict) and next(iter(out)).startswith("metrics/"):
                assert next(iter(out.values()))["cache"] is False


@pytest.mark.parametrize("params_file", ["params.yaml", *sorted(p.relative_to(ROOT).as_posix()
                                                                 for p in (ROOT / "presets").glob("*.yaml"))])
def test_no_param_key_is_named_size_or_nfiles(params_file):
    def keys(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                yield from keys(value)
        elif isinstance(node, list):
            for value in node:
                yield from keys(value)
    found = {key for key in keys(yaml.safe_load((ROOT / params_file).read_text())) if key in ("size", "nfiles")}
    assert not found, f"DVC leaves keys named {found} out of the stage hash"


def test_dvc_config_is_offline_and_links_the_cache():
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"analytics\s*=\s*false", config)
    assert re.search(r"type\s*=\s*\"?hardlink,symlink", config)
