"""DVC stage `evaluate`: score the test split; metrics at the calibrated threshold and at logit 0, curves."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.calibrate import write_scores  # noqa: E402
from aligned_forensics.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.curves import pr_points, roc_points, write_curves_png, write_points  # noqa: E402
from aligned_forensics.evaluate import EvaluateConfig, run_evaluate  # noqa: E402
from aligned_forensics.io import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("data/model/best.pt"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest/test.csv"))
    parser.add_argument("--threshold", type=Path, default=Path("metrics/threshold.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--plots", type=Path, default=Path("metrics/eval"))
    parser.add_argument("--scores", type=Path, default=Path("data/evaluate"), help="scores.csv and rejects.csv")

    def body(args) -> str:
        config = load_config(args.params, "evaluate", EvaluateConfig)
        metrics, scored = run_evaluate(config, model_path=args.model, test_manifest=args.manifest,
                                       threshold_path=args.threshold)
        write_json(args.metrics, metrics)
        write_scores(args.scores, scored, threshold=metrics["threshold"])
        write_points(args.plots / "roc.json", roc_points(scored.labels, scored.scores))
        write_points(args.plots / "pr.json", pr_points(scored.labels, scored.scores))
        write_curves_png(args.plots / "curves.png", scored.labels, scored.scores, threshold=metrics["threshold"],
                         title=f"test split: AP {metrics['ap']:.3f}, AUC {metrics['auc']:.3f}, "
                               f"balanced accuracy {metrics['bacc']:.3f} at the calibrated threshold")
        return (f"{metrics['n_real']:,} real + {metrics['n_fake']:,} fake: AP {metrics['ap']:.4f}, "
                f"AUC {metrics['auc']:.4f}, bacc {metrics['bacc']:.4f} (at logit 0: {metrics['bacc_at_0']:.4f})")

    return run_stage("evaluate", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
