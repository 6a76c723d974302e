"""Choosing the compute device from a params value, and running batches that may not fit in its memory."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from aligned_forensics.common.errors import UserError

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    """'auto' means CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'")
    return torch.device(name)


def split_on_oom(forward: Callable[[int, int], torch.Tensor], count: int, *, what: str, param: str) -> torch.Tensor:
    """forward(start, stop) over items [0, count), halving a range that runs out of GPU memory, down to 1 item.

    The results are concatenated in order along dim 0. A single item that still does not fit raises a
    UserError naming `what` (e.g. "one 3000x4000 image") and the `param` that sets the batch size."""
    def run(start: int, stop: int) -> torch.Tensor:
        try:
            return forward(start, stop)
        except torch.OutOfMemoryError as error:
            if stop - start == 1:
                raise UserError(f"out of GPU memory on {what} alone (a batch of {count} was split down to 1 image, so "
                                f"lowering {param} cannot help): free GPU memory (other processes, a half-"
                                "precision dtype) or run this stage on the CPU (device: cpu)") from error
            log.warning("out of memory on a batch of %d: splitting it (lower %s)", stop - start, param)
        # outside the except block: its traceback no longer holds the failed forward's tensors
        torch.cuda.empty_cache()  # a no-op unless CUDA is initialised
        middle = (start + stop) // 2  # memory-aware: split the batch rather than fail a long run
        return torch.cat([run(start, middle), run(middle, stop)])

    return run(0, count)
