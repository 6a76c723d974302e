"""DVC stage `train`: train the detector on the manifest, best/last checkpoints in data/model/, dvclive logs.

Resumes an interrupted run from data/model/last.pt. On several GPUs or machines: `torchrun
--nproc_per_node=N stages/train.py` (DDP; train.batch_size stays the global batch).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from dvclive import Live  # noqa: E402

from aligned_forensics.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.curves import write_training_png  # noqa: E402
from aligned_forensics.distributed import finish_distributed, init_distributed, launched_by_torchrun  # noqa: E402
from aligned_forensics.training import Ranks, TrainConfig, train_detector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest"))
    parser.add_argument("--out", type=Path, default=Path("data/model"))
    parser.add_argument("--live", type=Path, default=Path("metrics/train"))

    def body(args) -> str:
        config = load_config(args.params, "train", TrainConfig)
        ranks, device = Ranks(), None
        if launched_by_torchrun():
            rank, world, device = init_distributed(config.device)
            ranks = Ranks(rank, world)
        manifests = {"train_manifest": args.manifest / "train.csv", "val_manifest": args.manifest / "val.csv"}
        if ranks.rank == 0:  # dvc.yaml declares the metrics and plots itself; DVC (not dvclive) records experiments
            with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:
                summary, history = train_detector(config, **manifests, model_dir=args.out, live=live, ranks=ranks,
                                                  device=device)
                live.summary.update(summary)  # best-epoch values beside dvclive's last-epoch ones
            write_training_png(args.live / "curves.png", history, best_epoch=summary["best_epoch"],
                               title=f"{config.arch}, {'synced pairs' if config.sync else 'independent images'}, "
                                     f"seed {config.seed}")
        else:
            silent = SimpleNamespace(step=0, log_metric=lambda *a, **k: None, next_step=lambda: None)
            summary, _ = train_detector(config, **manifests, model_dir=args.out, live=silent, ranks=ranks,
                                        device=device)
        if ranks.world > 1:
            finish_distributed()
        return (f"{summary['epochs']} epochs, best val bacc {summary['best_val_bacc']:.4f} at epoch "
                f"{summary['best_epoch']}, {summary['train_seconds']:.0f} s")

    return run_stage("train", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
