"""GPU-exact training: per-rank generators, random states that survive a resume, and the deterministic switch."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

DROPOUT_STREAM, LOADER_STREAM = 0xD50, 0x10AD  # separate the ranks' dropout draws from their loader seeds
CUBLAS_WORKSPACE = ":4096:8"  # the setting NVIDIA documents for deterministic cuBLAS (CUDA >= 10.2)


def rank_seed(seed: int, rank: int, stream: int, *more: int) -> int:
    """A 63-bit seed from (seed, rank, stream, *more) alone: every rank, and every use, gets its own."""
    words = [seed, rank, stream, *more]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def seed_rank(seed: int, rank: int) -> None:
    """Seed torch's global generators (CPU and every GPU), which drive dropout, from (seed, rank).

    Called after the model is built from `seed` alone, so every rank starts from the same weights but no
    two ranks draw the same dropout masks (one seed for all ranks made them identical)."""
    torch.manual_seed(rank_seed(seed, rank, DROPOUT_STREAM))


def loader_generator(seed: int, rank: int) -> torch.Generator:
    """The DataLoader's own generator: worker base seeds differ per rank and never consume the dropout stream."""
    return torch.Generator().manual_seed(rank_seed(seed, rank, LOADER_STREAM))


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's torch random state: {"cpu": state, "cuda": [one state per visible GPU]} (empty off CUDA)."""
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" and torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": list(cuda)}


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back a capture_rng state: dropout then continues as if the run had never stopped."""
    torch.set_rng_state(state["cpu"])
    if device.type != "cuda" or not state["cuda"]:
        return
    visible = torch.cuda.device_count()
    if len(state["cuda"]) != visible:
        log.warning("last.pt holds the random states of %d GPU(s), this machine shows %d: restoring the first %d",
                    len(state["cuda"]), visible, min(visible, len(state["cuda"])))
    for index, gpu_state in enumerate(state["cuda"][:visible]):
        torch.cuda.set_rng_state(gpu_state, index)


def gather_rng(device: torch.device, world: int) -> list[dict[str, Any]]:
    """Every rank's capture_rng, in rank order (a collective: all ranks must call it), for rank 0 to save."""
    state = capture_rng(device)
    if world == 1:
        return [state]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, {"cpu": state["cpu"], "cuda": [s.cpu() for s in state["cuda"]]})
    return states


def resume_rng(states: list[dict[str, Any]], *, device: torch.device, seed: int, rank: int, world: int,
               epoch: int) -> None:
    """Restore this rank's saved state; when last.pt came from another number of ranks, seed from
    (seed, rank, epoch) instead (still distinct per rank, but not the draws of an uninterrupted run)."""
    if len(states) == world:
        restore_rng(states[rank], device)
        return
    log.warning("last.pt was written by %d process(es), this run has %d: dropout is reseeded per rank, so the "
                "run continues correctly but not bit for bit as an uninterrupted one", len(states), world)
    torch.manual_seed(rank_seed(seed, rank, DROPOUT_STREAM, epoch))


def set_deterministic(enabled: bool) -> None:
    """Deterministic cuDNN and cuBLAS kernels (and an error from any op that has none), or torch's defaults.

    CUBLAS_WORKSPACE_CONFIG is read when cuBLAS starts, so this must run before the first CUDA matrix product
    of the process (train_detector calls it first). The cost is measured by bench/gpu.sh."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: another source of variation
