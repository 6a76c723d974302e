"""The dataset splits every stage agrees on."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
