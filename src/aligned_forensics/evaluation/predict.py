"""Score images with a trained detector: `aligned-forensics predict PATHS… [--model M] [--out CSV]`.

PATHS are images or folders (searched recursively). The model is our bundle (`data/bundle/detector.pt`, which
carries its calibrated threshold), a checkpoint (`data/model/best.pt`; the threshold is then read from
`--threshold`, default metrics/threshold.json, only when that file was calibrated for this very model file, by
its SHA-256; else logit 0) or one of the authors' released checkpoints in any of their forms (`--arch`, default
res50nodown). Prints path, logit, P(fake) and the decision; files that are not images are listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import info_path, write_csv

log = logging.getLogger("aligned_forensics.evaluation.predict")
COLUMNS = ("path", "logit", "probability_fake", "called")


def predict(paths: list[Path], *, model_path: Path, threshold_path: Path | None, arch: str | None, batch_size: int,
            device_name: str) -> tuple[list[dict[str, str]], list[dict[str, str]], float, str]:
    """(rows per scored image, rejects, the threshold used, where it came from)."""
    # imported here, not at the top, so that `--help` answers before torch and OpenCV load (seconds)
    import numpy as np

    from aligned_forensics.common.devices import pick_device
    from aligned_forensics.common.image_sets import expand, resolve_items
    from aligned_forensics.detector.checkpoints import load_detector
    from aligned_forensics.evaluation.scoring import score_images

    files = [file for path in paths for file in (expand(str(path)) if path.is_dir() else [path])]
    if not files:
        raise UserError(f"no images found in {', '.join(map(str, paths))}")
    items, rejects = resolve_items(files, stage="predict")
    device = pick_device(device_name)
    model, payload = load_detector(model_path, device=device, arch=arch)
    if "threshold" in payload:
        threshold, origin = float(payload["threshold"]["threshold"]), f"{model_path} (calibrated)"
    else:
        threshold, origin = threshold_for(model_path, threshold_path)
    scores, decode_rejects = score_images(model, items, protocol="full", crop_size=0, batch_size=batch_size,
                                          device=device, stage="predict", desc="predict")
    probability = 1.0 / (1.0 + np.exp(-scores))
    rows = [{"path": item.path, "logit": f"{score:.6f}", "probability_fake": f"{p:.6f}",
             "called": "fake" if score > threshold else "real"}
            for item, score, p in zip(items, scores, probability, strict=True) if np.isfinite(score)]
    return rows, rejects + decode_rejects, threshold, origin


def threshold_for(model_path: Path, threshold_path: Path | None) -> tuple[float, str]:
    """(threshold, where from): the threshold file's only if it records this model file's SHA-256, else 0."""
    from aligned_forensics.common.io import file_sha256

    if threshold_path is None or not threshold_path.is_file():
        return _logit_zero(f"no calibrated threshold: {threshold_path} not found")
    try:
        record = json.loads(threshold_path.read_text())
        threshold = float(record["threshold"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{threshold_path} is not a threshold record ({type(error).__name__}: {error}); pass the "
                        "metrics/threshold.json the threshold stage wrote") from None
    digest = record.get("model_sha256")
    full_record = info_path(threshold_path)  # the stage writes the digest in its full record beside the file
    if digest is None and full_record.is_file():
        digest = json.loads(full_record.read_text()).get("model_sha256")
    if digest is None:
        return _logit_zero(f"{threshold_path} does not name the model it was calibrated for (no model_sha256 in "
                           f"it or in {full_record}); rerun `dvc repro threshold` or pass the bundle")
    model_digest = file_sha256(model_path)
    if digest != model_digest:
        return _logit_zero(f"{threshold_path} belongs to another model (sha256 {digest[:12]}…, {model_path} is "
                           f"{model_digest[:12]}…)")
    return threshold, f"{threshold_path} (calibrated for this model)"


def _logit_zero(reason: str) -> tuple[float, str]:
    log.warning("using logit 0 as the threshold: %s", reason)
    return 0.0, f"logit 0 ({reason})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of predict, shared by `python -m aligned_forensics.evaluation.predict` and `aligned-forensics`."""
    parser.add_argument("paths", nargs="+", type=Path, help="images or folders")
    parser.add_argument("--model", type=Path, default=Path("data/bundle/detector.pt"),
                        help="bundle, checkpoint or released checkpoint; a folder means its detector.pt or best.pt")
    parser.add_argument("--threshold", type=Path, default=Path("metrics/threshold.json"),
                        help="used for a checkpoint only when it was calibrated for that file (its model_sha256)")
    parser.add_argument("--arch", default=None,
                        help="architecture of a file that records none, e.g. a released checkpoint (default "
                             "res50nodown); a file that records one is loaded as that")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this CSV")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    """Score `args.paths`, print one tab-separated row per image; 2 on a UserError."""
    logging.basicConfig(level="INFO", stream=sys.stderr, format="%(levelname)s %(message)s")
    model_path = args.model
    if model_path.is_dir():
        model_path = next((model_path / name for name in ("detector.pt", "best.pt") if (model_path / name).is_file()),
                          model_path / "detector.pt")
    try:
        rows, rejects, threshold, origin = predict(args.paths, model_path=model_path, threshold_path=args.threshold,
                                                   arch=args.arch, batch_size=args.batch_size,
                                                   device_name=args.device)
    except UserError as error:
        log.error("%s", error)
        return 2
    print("\t".join(COLUMNS))
    for row in rows:
        print("\t".join(row[column] for column in COLUMNS))
    for reject in rejects:
        log.warning("skipped %s: %s", reject["path"], reject["reason"])
    if args.out:
        write_csv(args.out, rows, COLUMNS)
    fakes = sum(row["called"] == "fake" for row in rows)
    log.info("%d image(s) scored, %d called fake at threshold %.4f from %s; %d skipped", len(rows), fakes,
             threshold, origin, len(rejects))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m aligned_forensics.evaluation.predict`; `aligned-forensics predict` is the same command."""
    parser = argparse.ArgumentParser(prog="python -m aligned_forensics.evaluation.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
