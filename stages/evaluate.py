"""DVC stage `evaluate`: every test set at the calibrated threshold and at logit 0, curves, robustness sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.download import downloads_dir  # noqa: E402
from aligned_forensics.common.figures import pr_points, roc_points, write_curves_png, write_points, write_sweeps_png
from aligned_forensics.common.io import atomic_write_text, pick, write_json, write_metrics  # noqa: E402
from aligned_forensics.evaluation.evaluate import EvaluateConfig, run_evaluate  # noqa: E402
from aligned_forensics.evaluation.format_match import DECLARED_MATCHED  # noqa: E402
from aligned_forensics.evaluation.report import summary_table  # noqa: E402
from aligned_forensics.evaluation.threshold import write_scores  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", type=Path, default=Path("data/model/best.pt"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest"), help="folder of <split>.csv")
    parser.add_argument("--threshold", type=Path, default=Path("metrics/threshold.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--plots", type=Path, default=Path("metrics/eval"))
    parser.add_argument("--scores", type=Path, default=Path("data/evaluate"), help="<set>/scores.csv, rejects.csv")
    parser.add_argument("--arch", default=None,
                        help="architecture of a model file that records none, e.g. an authors' release "
                             "(default res50nodown); a file that records one is loaded as that")

    def body(args) -> str:
        config = load_config(args.params, "evaluate", EvaluateConfig)
        metrics, scored_sets, sweeps = run_evaluate(config, model_path=args.model, manifest_dir=args.manifest,
                                                    threshold_path=args.threshold, cache=downloads_dir(),
                                                    arch=args.arch)
        threshold = metrics["threshold"]
        for name, scored in scored_sets.items():
            values = metrics["sets"][name]
            write_scores(args.scores / name, scored, threshold=threshold)
            write_points(args.plots / "roc" / f"{name}.json", roc_points(scored.labels, scored.scores))
            write_points(args.plots / "pr" / f"{name}.json", pr_points(scored.labels, scored.scores))
            write_curves_png(args.plots / "curves" / f"{name}.png", scored.labels, scored.scores, threshold=threshold,
                             title=f"{name}: AP {values['ap']:.3f}, AUC {values['auc']:.3f}, balanced accuracy "
                                   f"{values['bacc']:.3f} at the calibrated threshold")
        if sweeps:
            write_json(args.plots / "sweeps.json", sweeps)
            for kind in sorted({row["kind"] for row in sweeps.values()}):
                write_points(args.plots / "sweeps" / f"{kind}.json", [
                    {"level": row["level"], "mean_p_fake_real": round(row["mean_p_fake_real"], 5),
                     "mean_p_fake_fake": round(row["mean_p_fake_fake"], 5), "bacc": round(row["bacc"], 5)}
                    for row in sweeps.values() if row["kind"] == kind])
            write_sweeps_png(args.plots / "sweeps.png", sweeps, title=f"robustness of {config.sweeps.test_set}")
        compared = ("ap", "auc", "bacc", "eer", "pd_at_5pct_far", *DECLARED_MATCHED)  # matched: format_match.py
        declared = pick(metrics, *compared)  # the mean over sets; per set too when there are several
        if len(metrics["sets"]) > 1:
            declared["sets"] = {name: pick(values, *compared) for name, values in metrics["sets"].items()}
        write_metrics(args.metrics, metrics, declared=declared)
        atomic_write_text(args.plots / "summary.md", summary_table(metrics))
        return (f"{len(scored_sets)} set(s), {metrics['n_real']:,} real + {metrics['n_fake']:,} fake: mean AP "
                f"{metrics['ap']:.4f} ({metrics['ap_matched']:.4f} format-matched), AUC {metrics['auc']:.4f}, EER "
                f"{metrics['eer']:.4f}, bacc {metrics['bacc']:.4f} "
                f"(at logit 0: {metrics['bacc_at_0']:.4f}){f', {len(sweeps)} sweep levels' if sweeps else ''}")

    return run_stage("evaluate", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
