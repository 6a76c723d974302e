"""DVC stage `stay_positive`: retrain the trained detector's final layer with weights >= 0 (Stay-Positive).

The backbone (batch-norm statistics too) is frozen, the final layer starts from zero and is projected onto
w >= 0 after every optimiser step. Writes data/stay_positive/model/{best,last}.pt (resumable), dvclive logs,
and an inspection of the final layer: counts of zero and positive weights and the 20 largest.
On several GPUs: `torchrun --nproc_per_node=N stages/stay_positive.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

import torch  # noqa: E402

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.figures import write_points, write_weights_png  # noqa: E402
from aligned_forensics.common.io import remove_partials, write_json, write_metrics  # noqa: E402
from aligned_forensics.detector.checkpoints import load_detector  # noqa: E402
from aligned_forensics.training.launch import declared_training_metrics, describe_training, run_training  # noqa: E402
from aligned_forensics.training.stay_positive import (  # noqa: E402
    StayPositiveConfig,
    inspect_weights,
    train_stay_positive,
)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("data/model/best.pt"), help="the detector to retrain")
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest"))
    parser.add_argument("--out", type=Path, default=Path("data/stay_positive/model"))
    parser.add_argument("--live", type=Path, default=Path("metrics/stay_positive/train"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/stay_positive/train.json"),
                        help="the best epoch's val metrics")
    parser.add_argument("--weights", type=Path, default=Path("metrics/stay_positive/weights"),
                        help="summary.json, top.json and weights.png: the final layer inspected")
    parser.add_argument("--arch", default=None,
                        help="architecture of a model file that records none, e.g. an authors' release "
                             "(default res50nodown); a file that records one is loaded as that")

    def body(args) -> str:
        config = load_config(args.params, "stay_positive", StayPositiveConfig)

        def fit(live, ranks, device):
            if ranks.rank == 0:
                remove_partials(args.out)  # a killed checkpoint write; data/stay_positive/model persists
            return train_stay_positive(config, model_path=args.model, train_manifest=args.manifest / "train.csv",
                                       val_manifest=args.manifest / "val.csv", model_dir=args.out, live=live,
                                       ranks=ranks, device=device, arch=args.arch)

        summary, ranks = run_training(fit, device_name=config.device, live_dir=args.live,
                                      title=f"stay-positive retrain, {config.pairing}, "
                                            f"{'synced pairs' if config.sync else 'independent'}, seed {config.seed}")
        if ranks.rank:
            return "rank done"
        write_metrics(args.metrics, summary, declared=declared_training_metrics(summary))
        cpu = torch.device("cpu")
        base = load_detector(args.model, device=cpu, arch=args.arch)[0]
        positive = load_detector(args.out / "best.pt", device=cpu)[0]
        counts, ranking = inspect_weights(base.fc, positive.fc)
        write_json(args.weights / "summary.json", counts)
        write_points(args.weights / "top.json", ranking)
        write_weights_png(args.weights / "weights.png", base.fc.weight.detach().reshape(-1).numpy(),
                          positive.fc.weight.detach().reshape(-1).numpy(), ranking,
                          title=f"final layer: {counts['positive']:,} positive, {counts['zero']:,} zero of "
                                f"{counts['features']:,} (input model: {counts['base_negative']:,} negative)")
        return (f"{describe_training(summary)}; final layer {counts['positive']:,} positive / {counts['zero']:,} "
                f"zero of {counts['features']:,} weights")

    return run_stage("stay_positive", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
