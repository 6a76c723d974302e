"""Fresh git + DVC projects holding this checkout's files, for tests that run the real `dvc` as a user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The checkout's interpreter first on PATH (stage commands call `python`), offline, no analytics, no bars.
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; with `check`, a failure shows the tail of its output."""
    result = subprocess.run(args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def make_project(folder: Path, params: dict[str, Any]) -> Path:
    """`folder` as a fresh git repository with this checkout's tracked (and unignored) files and `params`."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file() and not name.startswith(("data/", "metrics/", "report/")):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], folder)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], folder)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], folder)
    return folder


def resolved_stages(root: Path = ROOT) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages as DVC resolves them (vars and foreach expanded: `threshold@base`, …), in file order."""
    from dvc.parsing import DataResolver
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return DataResolver(repo, str(root), yaml.safe_load((root / "dvc.yaml").read_text())).resolve()["stages"]
