"""Choosing the compute device from a params value."""

from __future__ import annotations

import torch

from aligned_forensics.common.errors import UserError


def pick_device(name: str) -> torch.device:
    """'auto' means CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'")
    return torch.device(name)
