"""Nothing the pipeline loads can run code: an AST audit of src/ and stages/, plus behavioural checks that a
checkpoint carrying code is refused without running it and that only diffusers autoencoder classes load."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from aligned_forensics.common.errors import UserError
from aligned_forensics.detector.checkpoints import read_checkpoint
from tests.conftest import REPO_ROOT

SOURCES = sorted([*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "stages").glob("*.py")])
SAFE_YAML = {"safe_load", "safe_load_all", "safe_dump", "safe_dump_all", "YAMLError",
             "SafeDumper", "Node"}  # writing through a SafeDumper subclass emits plain YAML only
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}
CODE_LOADERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
                ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads")}


def calls(tree: ast.AST) -> Iterator[ast.Call]:
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def dotted(node: ast.AST) -> tuple[str, ...]:
    """`a.b.c` as ('a', 'b', 'c'); () for anything that is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return (*inner, node.attr) if inner else ()
    return ()


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{node.lineno}"


@pytest.fixture(scope="module")
def trees() -> dict[Path, ast.Module]:
    assert len(SOURCES) > 40, "the audit found too few files: did the layout change?"
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in SOURCES}


def test_every_torch_load_passes_weights_only_true(trees):
    found, unsafe = 0, []
    for path, tree in trees.items():
        for call in calls(tree):
            if dotted(call.func)[-2:] == ("torch", "load"):
                found += 1
                if not is_constant(keyword(call, "weights_only"), True):
                    unsafe.append(where(path, call))
    assert found >= 2, "expected the checkpoint and TAESD loaders to call torch.load"
    assert not unsafe, f"torch.load without weights_only=True (runs pickled code): {unsafe}"


def test_no_remote_code_and_no_custom_pipelines(trees):
    offending = [where(path, call) for path, tree in trees.items() for call in calls(tree)
                 for name in ("trust_remote_code", "custom_pipeline", "custom_revision")
                 if keyword(call, name) is not None and not is_constant(keyword(call, name), False)]
    assert not offending, f"remote code enabled at {offending}"
    pretrained = [call for tree in trees.values() for call in calls(tree)
                  if isinstance(call.func, ast.Attribute) and call.func.attr == "from_pretrained"]
    assert len(pretrained) >= 2, "expected the hub and folder autoencoder loaders"
    mentions = [path.name for path in SOURCES if "trust_remote_code=True" in path.read_text().replace(" ", "")]
    assert not mentions, f"trust_remote_code=True appears in {mentions}"


def test_yaml_is_only_read_with_safe_load(trees):
    used = {(where(path, node), node.attr) for path, tree in trees.items() for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and dotted(node.value) == ("yaml",)}
    assert any(attribute == "safe_load" for _, attribute in used), "params are read with yaml.safe_load"
    safe_dumps = {where(path, node.func) for path, tree in trees.items() for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and dotted(node.func.value) == ("yaml",) and node.func.attr == "dump"
                  and any(keyword.arg == "Dumper" and isinstance(keyword.value, ast.Name)
                          and keyword.value.id.endswith("Dumper") for keyword in node.keywords)}
    unsafe = sorted(place for place, attribute in used if attribute not in SAFE_YAML
                    and not (attribute == "dump" and place in safe_dumps))
    assert not unsafe, f"yaml used other than through safe_load/safe_dump at {unsafe}"
    imported = [where(path, node) for path, tree in trees.items() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "yaml"
                and any(alias.name not in SAFE_YAML for alias in node.names)]
    assert not imported, f"unsafe names imported from yaml at {imported}"


def test_no_shell_and_no_pickle_eval_or_exec(trees):
    problems = []
    for path, tree in trees.items():
        for call in calls(tree):
            name = dotted(call.func)
            shell = keyword(call, "shell")
            if shell is not None and not is_constant(shell, False):
                problems.append(f"{where(path, call)} shell=")
            if name[-2:] in SHELL_CALLS or name[-2:] in CODE_LOADERS or name in (("eval",), ("exec",)):
                problems.append(f"{where(path, call)} {'.'.join(name)}")
            if name[-2:] in (("np", "load"), ("numpy", "load")) and \
                    not is_constant(keyword(call, "allow_pickle"), False):
                problems.append(f"{where(path, call)} numpy.load without allow_pickle=False")
    assert not problems, f"code execution or shell use: {problems}"


class _WritesMarker:
    """Unpickling this calls open(marker, 'w'): harmless, but code all the same."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"format": "aligned-forensics-detector/1", "state_dict": {"w": torch.zeros(2)},
                "payload": _WritesMarker(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as error:
        read_checkpoint(tmp_path / "evil.pt")
    message = str(error.value)
    assert message.startswith(f"refused to load {tmp_path / 'evil.pt'}") and "could run code" in message
    assert "Unsupported global" in message and "weights_only=False" not in message  # never advise the unsafe way
    assert not marker.exists()


def test_a_corrupt_checkpoint_names_the_file_in_one_line(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"broken.pt is not a loadable checkpoint \(.*\); it may be truncated"):
        read_checkpoint(tmp_path / "broken.pt")


@pytest.mark.parametrize("class_name", ["DiffusionPipeline", "UNet2DConditionModel", "os.system", ""])
def test_only_diffusers_autoencoder_classes_are_instantiated_from_a_config(tmp_path, class_name):
    from aligned_forensics.autoencoder.autoencoder import _autoencoder_class

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": class_name}))
    with pytest.raises(UserError, match="not a diffusers autoencoder class"):
        _autoencoder_class(tmp_path / "config.json")
