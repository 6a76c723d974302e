"""The `aligned-forensics` console command: help before heavy imports, predict delegation, preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aligned_forensics import __version__, commands
from aligned_forensics.common.presets import GENERATED_MARK
from aligned_forensics.evaluation import predict
from tests.conftest import REPO_ROOT

HEAVY = ("torch", "torchvision", "diffusers", "cv2", "sklearn")
SCRIPT = Path(sys.executable).parent / "aligned-forensics"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter on the checkout's library."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["preset", "--help"], ["--version"]])
def test_help_answers_before_torch_opencv_or_sklearn_load(argv):
    result = run_python(
        "import json, sys\n"
        "from aligned_forensics.commands import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    assert result.returncode == 0, result.stderr
    *help_lines, last = result.stdout.strip().splitlines()
    code, heavy = json.loads(last)
    assert code == 0 and heavy == []
    assert "usage: aligned-forensics" in "\n".join(help_lines) or __version__ in "\n".join(help_lines)


def test_the_module_form_of_predict_still_answers_help_lightly():
    result = run_python(
        "import sys\n"
        "from aligned_forensics.evaluation.predict import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        f"    print('heavy:', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert "usage: python -m aligned_forensics.evaluation.predict" in result.stdout
    assert "heavy: []" in result.stdout


def test_predict_help_lists_predict_options(capsys):
    with pytest.raises(SystemExit) as exit:
        commands.main(["predict", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "usage: aligned-forensics predict" in out and "--model" in out and "--threshold" in out


def test_predict_hands_its_arguments_to_the_predict_module(monkeypatch):
    seen = {}
    monkeypatch.setattr(predict, "run", lambda args: seen.setdefault("args", args) and 7)
    assert commands.main(["predict", "photos", "x.jpg", "--model", "m.pt", "--batch-size", "4"]) == 7
    args = seen["args"]
    assert (args.paths, args.model, args.batch_size, args.device) == ([Path("photos"), Path("x.jpg")],
                                                                      Path("m.pt"), 4, "auto")


def test_predict_on_an_empty_folder_fails_with_exit_2(tmp_path, caplog):
    assert commands.main(["predict", str(tmp_path)]) == 2
    assert "no images found" in caplog.text


def test_a_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as exit:
        commands.main([])
    assert exit.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_preset_writes_params_and_check_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "params.yaml"
    assert commands.main(["preset", "presets/sd-vae.yaml", "--out", str(out), "--check"]) == 0
    assert "presets/sd-vae.yaml over presets/paper-sync.yaml: valid" in capsys.readouterr().out
    assert not out.exists()
    assert commands.main(["preset", "presets/sd-vae.yaml", "--out", str(out)]) == 0
    assert "from presets/sd-vae.yaml over presets/paper-sync.yaml" in capsys.readouterr().out
    assert out.read_text().startswith(f"{GENERATED_MARK} presets/sd-vae.yaml`")
    assert yaml.safe_load(out.read_text())["autoencoder"]["id"] == "stabilityai/sd-vae-ft-mse"


def test_a_bad_preset_exits_2_naming_the_file_and_key(tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text(f"extends: {REPO_ROOT / 'presets' / 'paper-sync.yaml'}\ntrain:\n  lrr: 1\n")
    assert commands.main(["preset", str(tmp_path / "typo.yaml"), "--out", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml: key 'train.lrr' is not in" in err and "did you mean 'train.lr'" in err
    assert not (tmp_path / "params.yaml").exists()


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is missing: run `pip install --no-deps -e .`")
def test_the_installed_console_script_runs():
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"aligned-forensics {__version__}"
