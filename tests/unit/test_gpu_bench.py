"""bench/gpu.sh cannot rot: its CPU fallback runs every section at tiny sizes and writes finite numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SECTIONS = ("card", "conv_peak", "architectures", "reconstruction", "original_loop", "per_image_identity",
            "training", "training_deterministic", "training_roundtrip", "scoring", "seconds")


def numbers(node: object) -> list[float]:
    """Every int or float anywhere in a JSON document (booleans are not numbers here)."""
    if isinstance(node, dict):
        return [n for value in node.values() for n in numbers(value)]
    if isinstance(node, list):
        return [n for value in node for n in numbers(value)]
    return [float(node)] if isinstance(node, int | float) and not isinstance(node, bool) else []


def test_gpu_bench_runs_its_cpu_fallback_and_writes_every_section(tmp_path: Path):
    committed = (REPO_ROOT / "bench" / "RESULTS.md").read_bytes()
    env = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(REPO_ROOT / "bench" / "gpu.sh"), "--tiny", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "s planned]" in result.stdout  # the running total against the time plan
    document = json.loads((tmp_path / "gpu-cpu-tiny.json").read_text())
    assert set(SECTIONS) <= set(document) and document["mode"] == "tiny-cpu"
    for section in SECTIONS:
        values = numbers(document[section])
        assert values and all(math.isfinite(v) for v in values), section
    assert document["architectures"]["identical"]  # KL-f8 (LDM) and the SD/SDXL VAE: one architecture
    assert {(r["side"], r["dtype"], r["batch"]) for r in document["reconstruction"]} == {
        (side, dtype, batch) for side in (16, 32) for dtype in ("fp32", "bf16") for batch in (1, 2)}
    assert all(r["images_per_second"] > 0 and r["fraction_of_bf16_peak"] > 0 for r in document["reconstruction"])
    assert document["per_image_identity"]["per_image_identical"]  # CPU here; the GPU run checks CUDA
    assert {r["deterministic"] for r in document["training_deterministic"]} == {False, True}
    assert [r["input_filter"] for r in document["training_roundtrip"]] == ["roundtrip"]  # fp32 only on a CPU
    table = (tmp_path / "RESULTS.md").read_text()
    assert table.startswith("<!-- bench/gpu.sh cpu-tiny:") and "| kl-f8-ldm = sd-sdxl-vae | 32² | bf16 | 2 |" in table
    assert "`input_filter: roundtrip` (SD VAE architecture" in table
    assert (REPO_ROOT / "bench" / "RESULTS.md").read_bytes() == committed  # a test never writes the committed one


def test_a_rerun_replaces_its_block_and_keeps_the_rest():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from gpu_report import replace_block

    once = replace_block("# Results\n\nearlier text\n", "nvidia-h200", "table one\n")
    twice = replace_block(once + "\n## later section\n", "nvidia-h200", "table two\n")
    assert "table one" not in twice and twice.count("table two") == 1
    assert twice.startswith("# Results\n\nearlier text\n") and twice.rstrip().endswith("## later section")
    assert replace_block(twice, "other-card", "x\n").count("<!-- /bench/gpu.sh") == 2
