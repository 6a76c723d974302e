"""DVC stage `threshold`: calibrate the decision threshold on a seeded subset of validation reals and fakes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.download import downloads_dir  # noqa: E402
from aligned_forensics.common.figures import roc_points, write_points  # noqa: E402
from aligned_forensics.common.io import pick, write_metrics  # noqa: E402
from aligned_forensics.detector.checkpoints import write_bundle  # noqa: E402
from aligned_forensics.evaluation.threshold import ThresholdConfig, run_threshold, write_scores  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("data/model/best.pt"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest/val.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/threshold.json"))
    parser.add_argument("--plots", type=Path, default=Path("metrics/threshold"))
    parser.add_argument("--scores", type=Path, default=Path("data/threshold"), help="scores.csv and rejects.csv")
    parser.add_argument("--bundle", type=Path, default=Path("data/bundle/detector.pt"),
                        help="the model with its threshold, for predict")
    parser.add_argument("--arch", default=None,
                        help="architecture of a model file that records none, e.g. an authors' release "
                             "(default res50nodown); a file that records one is loaded as that")

    def body(args) -> str:
        config = load_config(args.params, "threshold", ThresholdConfig)
        result, scored = run_threshold(config, model_path=args.model, val_manifest=args.manifest,
                                       cache=downloads_dir(), arch=args.arch)
        write_metrics(args.metrics, result, declared=pick(result, "threshold", "bacc"), digits=6)  # evaluate reads it
        write_points(args.plots / "roc.json", roc_points(scored.labels, scored.scores))
        write_scores(args.scores, scored, threshold=result["threshold"])
        write_bundle(args.model, result, args.bundle, arch=args.arch)
        return (f"threshold {result['threshold']:.4f} ({result['criterion']}) on {result['n_real']:,} real + "
                f"{result['n_fake']:,} fake: bacc {result['bacc']:.4f} (at logit 0: {result['bacc_at_0']:.4f})")

    return run_stage("threshold", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
