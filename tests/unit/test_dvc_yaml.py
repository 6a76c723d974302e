"""Lint dvc.yaml: the wiring the pipeline's correctness depends on."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.projects import resolved_stages

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = "src/aligned_forensics"
PHASES = ("common", "data", "autoencoder", "detector", "training", "evaluation")
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = resolved_stages(ROOT)


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
    assert name == section or name.startswith(f"{section}@")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_library_deps_are_whole_phase_folders_and_every_stage_explains_itself(name):
    stage = STAGES[name]
    library = [dep for dep in _deps(stage) if dep.startswith(LIBRARY)]
    assert library and all(dep.removeprefix(LIBRARY + "/") in PHASES for dep in library), library
    assert f"{LIBRARY}/common" in library
    assert 10 <= len(stage.get("desc", "")) <= 60, "`dvc stage list` shows a one-line description of every stage"


def test_dvc_yaml_is_short_and_reads_as_the_pipeline():
    """Phase-folder deps instead of one line per module (was 170 lines); one definition for both detectors."""
    lines = (ROOT / "dvc.yaml").read_text().splitlines()
    dependency_lines, inside = 0, False
    for line in lines:
        stripped = line.strip()
        if stripped.endswith(":") and not stripped.startswith("-"):
            inside = stripped == "deps:"
        elif inside and stripped.startswith("- "):
            dependency_lines += 1
    # 47 for the detectors' pipeline, 7 for the reference stage, 5 for the watched outside folders, 5 for the
    # autoencoder a roundtrip-input detector embeds (train's data and library; the scoring stages' library)
    assert dependency_lines <= 64, dependency_lines
    assert list(STAGES) == ["fetch", "autoencoder", "reconstruct", "manifest", "train", "stay_positive",
                            "threshold@base", "threshold@stay_positive", "evaluate@base", "evaluate@stay_positive",
                            "reference", "report"]
    assert {"foreach", "do"} <= set(DVC["stages"]["threshold"]) and {"foreach", "do"} <= set(DVC["stages"]["evaluate"])


def test_training_code_is_not_a_dependency_of_calibration_or_evaluation():
    """An edit to the augmentation or the train loop re-runs training only; scoring code lives in detector/."""
    for name, stage in STAGES.items():
        if name.startswith(("threshold", "evaluate", "report")):
            assert f"{LIBRARY}/training" not in _deps(stage), name
            imported = _library_imports(ROOT / re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1), set())
            assert not [module for module in imported if module.startswith(f"{LIBRARY}/training/")], name


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
            if (next(iter(out)) if isinstance(out, dict) else out).startswith(("metrics/", "report/")):
                assert isinstance(out, dict) and next(iter(out.values()))["cache"] is False, out


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
