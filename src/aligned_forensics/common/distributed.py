"""torchrun support: which shard this process is, its device, and waiting for the others."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from aligned_forensics.common.devices import pick_device


def launched_by_torchrun() -> bool:
    """True when torchrun (or any launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """Join the process group; return (rank, world size, this rank's device: cuda:LOCAL_RANK or cpu)."""
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def sum_over_ranks(value: int, device: torch.device) -> int:
    """The sum of `value` over all ranks (every rank gets it)."""
    total = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def finish_distributed() -> None:
    """Wait for every rank, then leave the process group."""
    dist.barrier()
    dist.destroy_process_group()
