"""DVC stage `reference`: training-free autoencoder round-trip scores (AEROBLADE-style), calibrated on val, tested."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.download import downloads_dir  # noqa: E402
from aligned_forensics.common.figures import roc_points, write_points  # noqa: E402
from aligned_forensics.common.io import pick, write_json, write_metrics  # noqa: E402
from aligned_forensics.evaluation.format_match import DECLARED_MATCHED  # noqa: E402
from aligned_forensics.evaluation.reference import (  # noqa: E402
    CALIBRATION,
    ReferenceConfig,
    run_reference,
    write_reference_scores,
)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--autoencoder", type=Path, default=Path("data/autoencoder"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest"), help="folder of <split>.csv")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/reference.json"))
    parser.add_argument("--plots", type=Path, default=Path("metrics/reference"), help="roc/<score>-<set>.json")
    parser.add_argument("--out", type=Path, default=Path("data/reference"),
                        help="<set>/scores.csv and rejects.csv (calibration/: the val images), info.json")

    def body(args) -> str:
        config = load_config(args.params, "reference", ReferenceConfig)
        metrics, scored, info = run_reference(config, autoencoder_dir=args.autoencoder, manifest_dir=args.manifest,
                                              cache=downloads_dir())
        thresholds = {name: metrics[name]["threshold"] for name in config.scores}
        for set_name, images in scored.items():
            write_reference_scores(args.out / set_name, images, thresholds=thresholds)
            if set_name != CALIBRATION:
                for name in config.scores:
                    write_points(args.plots / "roc" / f"{name}-{set_name}.json",
                                 roc_points(images.labels, images.score(name)))
        write_json(args.out / "info.json", info)  # label and timings: not metrics, they would differ every run
        write_metrics(args.metrics, metrics, declared={name: pick(metrics[name], "ap", "auc", "bacc", *DECLARED_MATCHED)
                                                       for name in config.scores})  # mean over the test sets
        scores = "; ".join(f"{name}: mean AP {metrics[name]['ap']:.4f} ({metrics[name]['ap_matched']:.4f} "
                           f"format-matched), AUC {metrics[name]['auc']:.4f}, bacc "
                           f"{metrics[name]['bacc']:.4f}" for name in config.scores)
        return (f"{len(scored) - 1} set(s), {info['images']:,} images in {info['seconds']:.1f} s "
                f"({info['images_per_second']:.1f}/s, {info['autoencoder']}): {scores}")

    return run_stage("reference", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
