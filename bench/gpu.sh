#!/usr/bin/env bash
# One prepared GPU benchmark, < 8 minutes on one H100/H200: reconstruction (KL-f8 / SD-SDXL VAE architectures,
# 256² and 512², fp32 and bf16, batch 1/16/64, ours vs the original's loop, fraction of the dense bf16 conv peak),
# res50nodown training (fp32 vs bf16, deterministic vs not, the roundtrip input around the SD VAE) and full-image
# scoring, per-image byte identity on CUDA.
# Writes bench/results/gpu-<card>.json and the card's block in bench/RESULTS.md (bench/gpu.py has the details).
#   bash bench/gpu.sh                     # on a GPU machine, from anywhere in the checkout
#   bash bench/gpu.sh --tiny --out DIR    # the CPU fallback at tiny sizes, written under DIR only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 HF_HUB_OFFLINE=1
exec "$python" "$root/bench/gpu.py" "$@"
