"""Wall time of each demo stage (forced, one at a time) and of a no-op `dvc repro`.

Usage, from the repository root after `make setup` (it rewrites data/ and metrics/):
    .venv/bin/python bench/stage_times.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("fetch", "autoencoder", "reconstruct", "manifest", "train", "threshold@base", "evaluate@base",
          "stay_positive", "threshold@stay_positive", "evaluate@stay_positive", "reference", "report")
# persistent outputs a forced stage would resume from (timing nothing): removed first, the stage redoes them
PERSISTED = {"reconstruct": "data/fake", "train": "data/model", "stay_positive": "data/stay_positive/model"}


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"}
    total = 0.0
    for stage in STAGES:
        if stage in PERSISTED:
            shutil.rmtree(PERSISTED[stage], ignore_errors=True)
        seconds = timed(["dvc", "repro", "--force", "--single-item", stage], env)
        total += seconds
        print(f"{stage:<24} {seconds:6.1f} s", flush=True)
    print(f"{'total':<24} {total:6.1f} s")
    print(f"{'no-op repro':<24} {timed(['dvc', 'repro'], env):6.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
