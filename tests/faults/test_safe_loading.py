"""Nothing the pipeline loads can run code: an AST audit of every deserialisation path in src/ and stages/ (and
of the installed diffusers' weight loader), plus behavioural checks that a checkpoint or a hub-cached ImageNet file
carrying code is refused without running it, that a tampered ImageNet file fails its hash, and that only diffusers
autoencoder classes load."""

from __future__ import annotations

import ast
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aligned_forensics.common.errors import UserError
from aligned_forensics.detector.checkpoints import read_checkpoint
from aligned_forensics.detector.models import create_detector
from tests.conftest import REPO_ROOT

SOURCES = sorted([*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "stages").glob("*.py")])
SAFE_YAML = {"safe_load", "safe_load_all", "safe_dump", "safe_dump_all", "YAMLError",
             "SafeDumper", "Node"}  # writing through a SafeDumper subclass emits plain YAML only
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}
CODE_LOADERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
                ("marshal", "load"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
                ("cloudpickle", "loads"), ("joblib", "load"), ("shelve", "open"), ("pd", "read_pickle"),
                ("pandas", "read_pickle"), ("jit", "load"), ("torch", "package")}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "joblib", "shelve"}
# torch.hub and torchvision's Weights.get_state_dict unpickle a cached file unchecked with weights_only=False
HUB_LOADERS = {"load_state_dict_from_url", "load_url", "get_state_dict"}


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


def test_no_hub_loader_and_every_download_is_hash_checked(trees):
    """torch.hub.load runs a repository's code; load_state_dict_from_url (torchvision's get_state_dict) trusts a
    cached file: neither may appear. download_url_to_file must pass the published hash prefix."""
    problems, downloads = [], 0
    for path, tree in trees.items():
        for call in calls(tree):
            name = dotted(call.func)
            if name[-1:] and name[-1] in HUB_LOADERS or name[-2:] in (("hub", "load"), ("hub", "load_state_dict")):
                problems.append(f"{where(path, call)} {'.'.join(name)}")
            if name[-1:] == ("download_url_to_file",):
                downloads += 1
                if keyword(call, "hash_prefix") is None or is_constant(keyword(call, "hash_prefix"), None):
                    problems.append(f"{where(path, call)} download_url_to_file without hash_prefix")
    assert downloads >= 1, "expected the ImageNet download in detector/models.py"
    assert not problems, f"weights loaded through torch.hub without a hash check or with pickled code: {problems}"


def test_no_pickle_module_is_imported_for_loading(trees):
    """`from pickle import loads` would hide a call from the attribute audit: only exception types may be taken."""
    imported = [where(path, node) for path, tree in trees.items() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES
                and any(not alias.name.endswith("Error") for alias in node.names)]
    assert not imported, f"loaders imported from a pickle module at {imported}"


def test_from_pretrained_never_turns_safetensors_off_and_diffusers_loads_bins_weights_only(trees):
    """diffusers' from_pretrained reads safetensors, or a .bin through its own torch.load: that call must pass
    weights_only=True in the installed version (an upgrade that drops it fails here)."""
    import diffusers.models.model_loading_utils as loading

    unsafe = [where(path, call) for path, tree in trees.items() for call in calls(tree)
              if isinstance(call.func, ast.Attribute) and call.func.attr in ("from_pretrained", "from_single_file")
              and keyword(call, "use_safetensors") is not None and not is_constant(keyword(call, "use_safetensors"),
                                                                                True)]
    assert not unsafe, f"use_safetensors turned off at {unsafe}"
    assert not any(isinstance(call.func, ast.Attribute) and call.func.attr == "from_single_file"
                   for tree in trees.values() for call in calls(tree)), "from_single_file reads pickled .ckpt files"
    tree = ast.parse(Path(loading.__file__).read_text())
    loader = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                  and node.name == "load_state_dict")
    loads = [call for call in calls(loader) if dotted(call.func) == ("torch", "load")]  # not safetensors.torch
    assert loads, "diffusers' load_state_dict no longer calls torch.load: re-audit how it reads .bin files"
    assert all(is_constant(keyword(call, "weights_only"), True) or any(
        k.arg is None and isinstance(k.value, ast.Name) and k.value.id == "weights_only_kwarg" for k in call.keywords)
        for call in loads), "diffusers loads .bin files without weights_only"
    assert '{"weights_only": True}' in ast.get_source_segment(Path(loading.__file__).read_text(), loader)


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
            if name[-1:] == ("load",) and name[:-1] in (("yaml",), ("ruamel", "yaml")):
                problems.append(f"{where(path, call)} yaml.load (use yaml.safe_load)")
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


def _evil_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1), "payload": _WritesMarker(marker)}, buffer)
    return buffer.getvalue()


def test_a_tampered_imagenet_file_in_the_hub_cache_fails_its_hash_and_is_never_unpickled(tmp_path, monkeypatch):
    """A replaced file under torchvision's own name in $TORCH_HOME/hub/checkpoints: the hash in its name is
    checked before a byte is unpickled (torch.hub would have run it: check_hash=False, weights_only=False)."""
    from torchvision.models import ResNet18_Weights

    marker = tmp_path / "marker"
    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name  # resnet18-f37072fd.pth
    planted = tmp_path / "torch" / "hub" / "checkpoints" / name
    planted.parent.mkdir(parents=True)
    planted.write_bytes(_evil_pickle(marker))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as error:
        create_detector("res18", pretrained="imagenet", seed=0)
    message = str(error.value)
    actual = hashlib.sha256(planted.read_bytes()).hexdigest()
    assert str(planted) in message and f"sha256 {actual} does not start with f37072fd" in message
    assert f"Delete it (rm '{planted}')" in message
    assert not marker.exists() and planted.exists()  # never run; deleting is the user's call


def test_a_malicious_pickle_with_a_matching_hash_is_refused_without_running(tmp_path, monkeypatch):
    """Even a file whose hash matches its name (a compromised mirror) is loaded with weights_only=True."""
    from aligned_forensics.detector import models

    marker = tmp_path / "marker"
    data = _evil_pickle(marker)
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    planted = tmp_path / "torch" / "hub" / "checkpoints" / name
    planted.parent.mkdir(parents=True)
    planted.write_bytes(data)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(models.IMAGENET_WEIGHTS, "res18", SimpleNamespace(url=f"https://example.invalid/{name}"))
    with pytest.raises(UserError) as error:
        create_detector("res18", pretrained="imagenet", seed=0)
    message = str(error.value)
    assert message.startswith(f"refused to load ImageNet weights {planted}") and "nothing in it was run" in message
    assert "Unsupported global" in message and "weights_only=False" not in message
    assert not marker.exists()
