"""Wall time of each demo stage (forced, one at a time) and of a no-op `dvc repro`.

Usage, from the repository root after `make setup` (it rewrites data/ and metrics/):
    .venv/bin/python bench/stage_times.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("fetch", "autoencoder", "reconstruct", "manifest", "train", "threshold", "evaluate")


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"}
    total = 0.0
    for stage in STAGES:
        seconds = timed(["dvc", "repro", "--force", "--single-item", stage], env)
        total += seconds
        print(f"{stage:<12} {seconds:6.1f} s", flush=True)
    print(f"{'total':<12} {total:6.1f} s")
    print(f"{'no-op repro':<12} {timed(['dvc', 'repro'], env):6.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
