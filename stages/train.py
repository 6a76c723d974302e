"""DVC stage `train`: train the detector on the manifest, best/last checkpoints in data/model/, dvclive logs.

Resumes an interrupted run from data/model/last.pt. On several GPUs or machines: `torchrun
--nproc_per_node=N stages/train.py` (DDP; train.batch_size stays the global batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.io import remove_partials, write_metrics  # noqa: E402
from aligned_forensics.training.launch import declared_training_metrics, describe_training, run_training  # noqa: E402
from aligned_forensics.training.train import TrainConfig, train_detector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest"))
    parser.add_argument("--autoencoder", type=Path, default=Path("data/autoencoder"),
                        help="the autoencoder a roundtrip input filter embeds")
    parser.add_argument("--out", type=Path, default=Path("data/model"))
    parser.add_argument("--live", type=Path, default=Path("metrics/train"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"), help="the best epoch's val metrics")

    def body(args) -> str:
        config = load_config(args.params, "train", TrainConfig)

        def fit(live, ranks, device):
            if ranks.rank == 0:  # temp files a killed checkpoint write left in this persist output would be cached
                remove_partials(args.out)
            return train_detector(config, train_manifest=args.manifest / "train.csv",
                                  val_manifest=args.manifest / "val.csv", model_dir=args.out, live=live,
                                  ranks=ranks, device=device, autoencoder_dir=args.autoencoder)

        batches = "synced pairs" if config.sync else "independent images"
        summary, ranks = run_training(fit, device_name=config.device, live_dir=args.live,
                                      title=f"{config.arch}, {config.pairing}, {batches}, seed {config.seed}")
        if ranks.rank == 0:
            write_metrics(args.metrics, summary, declared=declared_training_metrics(summary))
        return describe_training(summary)

    return run_stage("train", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
