"""Running a training loop alone or under torchrun: dvclive and the curves PNG on rank 0, silence elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from aligned_forensics.common.distributed import finish_distributed, init_distributed, launched_by_torchrun
from aligned_forensics.common.figures import write_training_png
from aligned_forensics.training.train import Ranks

Fit = Callable[[Any, Ranks, "torch.device | None"], tuple[dict[str, Any], list[dict[str, float]]]]


def run_training(fit: Fit, *, device_name: str, live_dir: Path, title: str) -> tuple[dict[str, Any], Ranks]:
    """Call fit(live, ranks, device) on this process; return (its summary, this process's ranks).

    Rank 0 logs to dvclive in `live_dir` and draws `live_dir/curves.png`. dvc.yaml declares the metrics and
    plots itself, and DVC (not dvclive) records experiments."""
    from dvclive import Live  # imported late: only training stages pay for it

    ranks, device = Ranks(), None
    if launched_by_torchrun():
        rank, world, device = init_distributed(device_name)
        ranks = Ranks(rank, world)
    if ranks.rank == 0:
        with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
            summary, history = fit(live, ranks, device)
            live.summary.update(summary)  # best-epoch values beside dvclive's last-epoch ones
        write_training_png(live_dir / "curves.png", history, best_epoch=summary["best_epoch"], title=title)
    else:
        silent = SimpleNamespace(step=0, log_metric=lambda *a, **k: None, next_step=lambda: None)
        summary, _ = fit(silent, ranks, device)
    if ranks.world > 1:
        finish_distributed()
    return summary, ranks


def declared_training_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """What `dvc metrics diff` compares for a training run: the selected epoch's validation AP and bacc."""
    return {"best_val_ap": summary["best_val_ap"], "best_val_bacc": summary["best_val_bacc"]}


def describe_training(summary: dict[str, Any]) -> str:
    """The one-line log summary of a training run."""
    return (f"{summary['epochs']} epochs, best epoch {summary['best_epoch']} by val {summary['selected_by']} "
            f"(bacc {summary['best_val_bacc']:.4f}, AP {summary['best_val_ap']:.4f}), "
            f"{summary['train_seconds']:.0f} s")
