"""The reference stage: a training-free baseline that calls an image fake when the autoencoder reconstructs it well.

AEROBLADE (Ricker et al., CVPR 2024) scores an image by its autoencoder round-trip distance; here the distance is
the pixel MSE (not LPIPS), with the pipeline's own autoencoder, posterior mode, decoded and rounded exactly as the
reconstruct stage does. A fake is already a reconstruction, so another round trip changes it less than a real:
  distance = -log(e1 + eps),                 e1 = MSE(x, AE(x))        (squared 8-bit levels)
  ratio    = -log((e1 + eps) / (e2 + eps)),  e2 = MSE(AE(x), AE(AE(x)))
The second trip measures how hard the image's content is to reconstruct at all, and the ratio divides that out.
Higher = more likely fake, for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from aligned_forensics.autoencoder.autoencoder import load_autoencoder
from aligned_forensics.autoencoder.reconstruct import reconstruct_batch
from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.errors import DataError
from aligned_forensics.common.image_sets import ScoreItem, TestSet, ValidationSet, resolve_test_set, resolve_validation
from aligned_forensics.common.io import write_csv
from aligned_forensics.common.params import require
from aligned_forensics.common.watch import NOTHING_OUTSIDE, check_watched
from aligned_forensics.detector.metrics import Criterion, detection_metrics, select_threshold
from aligned_forensics.evaluation.format_match import FormatMatch, matched_metrics, plan_matching
from aligned_forensics.evaluation.scoring import decoded_batches
from aligned_forensics.evaluation.threshold import calibration_items

log = logging.getLogger(__name__)

Score = Literal["distance", "ratio"]
EPSILON = 1e-3  # squared 8-bit levels: keeps the log finite when a round trip changes no pixel
CALIBRATION = "calibration"  # the validation images' folder under data/reference, beside one per test set
METRIC_KEYS = ("ap", "auc", "bacc", "real_acc", "fake_acc")
MATCHED_METRIC_KEYS = tuple(f"{key}_matched" for key in METRIC_KEYS)  # the test sets', format-matched
COUNT_KEYS = ("n_real", "n_fake", "rejected")


@dataclass(frozen=True)
class ReferenceConfig:
    """params.yaml `reference`."""

    scores: tuple[Score, ...] = ("distance", "ratio")
    n_per_class: int = 5000  # validation reals and fakes scored for calibration (each); fewer available -> all
    seed: int = 0
    criterion: Criterion = "bacc"  # as threshold.criterion, one threshold per score
    target_fpr: float = 0.05  # criterion fpr only
    fixed: float = 0.0  # criterion fixed only: this score
    batch_size: int = 16  # same-size images per forward pass on a GPU (a CPU runs one at a time, as reconstruct)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    test_sets: tuple[TestSet, ...] = (TestSet(name="test", split="test"),)  # as evaluate.test_sets
    format_match: FormatMatch = field(default_factory=FormatMatch)  # as evaluate.format_match
    watch: str = NOTHING_OUTSIDE  # the outside folder/archive it reads, a DVC dependency (common/watch.py)

    def __post_init__(self) -> None:
        require(len(self.scores) >= 1 and len(set(self.scores)) == len(self.scores), "reference.scores",
                "at least one of distance, ratio, each once", self.scores)
        require(self.n_per_class >= 1, "reference.n_per_class", "an integer >= 1", self.n_per_class)
        require(0 <= self.target_fpr <= 1, "reference.target_fpr", "a rate in [0, 1]", self.target_fpr)
        require(self.batch_size >= 1, "reference.batch_size", "an integer >= 1", self.batch_size)
        self.format_match.check("reference.format_match")
        for index, test_set in enumerate(self.test_sets):
            test_set.check(f"reference.test_sets[{index}]")
        names = [test_set.name for test_set in self.test_sets if not test_set.root]  # a root's names: at run time
        require(len(self.test_sets) >= 1 and len(set(names)) == len(names) and CALIBRATION not in names,
                "reference.test_sets", f"at least one set, names unique and not '{CALIBRATION}'", names)


@dataclass(frozen=True)
class ReferenceScores:
    """Round-trip errors of a set of reals and fakes; undecodable images are left out and listed."""

    paths: list[str]
    labels: np.ndarray  # (N,) 0 real, 1 fake
    errors: np.ndarray  # (N, 2) e1, e2 in squared 8-bit levels; e2 is NaN when no score needs it
    rejects: list[dict[str, str]]
    matched_errors: np.ndarray | None = None  # (N, 2) the same, format-matched (format_match.py); NaN: unmatched

    def score(self, name: Score) -> np.ndarray:
        """(N,) the named score of every image."""
        return reference_score(self.errors, name)

    def matched_score(self, name: Score) -> np.ndarray:
        """(N,) the named score of every image with the format cue removed (NaN where it cannot be matched)."""
        assert self.matched_errors is not None, "scored without format matching"
        return reference_score(self.matched_errors, name)


def reference_score(errors: np.ndarray, name: Score) -> np.ndarray:
    """(N, 2) errors -> (N,) score, higher = reconstructs better = more likely a reconstruction."""
    e1, e2 = errors[:, 0], errors[:, 1]
    if name == "distance":
        return -np.log(e1 + EPSILON)
    if name == "ratio":
        return -np.log((e1 + EPSILON) / (e2 + EPSILON))
    raise ValueError(f"unknown score {name!r}")


def mean_squared_error(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 twice -> (N,) float64 mean squared difference in squared 8-bit levels."""
    return (a.cpu().double() - b.cpu().double()).square().flatten(1).mean(1).numpy()


def roundtrip_errors(autoencoder: torch.nn.Module, pixels: torch.Tensor, *, twice: bool,
                     per_image: bool) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 2): e1 = MSE(x, AE(x)) and, when `twice`, e2 = MSE(AE(x), AE(AE(x))), else NaN."""
    seeds = [0] * len(pixels)  # never drawn: the posterior mode (and every deterministic family) takes no noise
    once = reconstruct_batch(autoencoder, pixels, seeds=seeds, sample="mode", per_image=per_image)  # uint8, CPU
    errors = np.full((len(pixels), 2), np.nan)
    errors[:, 0] = mean_squared_error(pixels, once)
    if twice:  # from the rounded 8-bit reconstruction, as a saved fake would be read back
        again = reconstruct_batch(autoencoder, once.to(pixels.device), seeds=seeds, sample="mode",
                                  per_image=per_image)
        errors[:, 1] = mean_squared_error(once, again)
    return errors


def score_items(autoencoder: torch.nn.Module, items: Sequence[ScoreItem], *, twice: bool, batch_size: int,
                per_image: bool, device: torch.device, stage: str
                ) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """(N, 2) errors per item as delivered and format-matched (each item re-encoded with its `match`, from the
    same decoded pixels; an item without one keeps its delivered errors); NaN rows for undecodable files, which
    are also returned as rejects labelled `stage`.

    Images are decoded like the reconstruct stage's reals (decode_rgb, at the recorded size), batched by size."""
    errors, matched_errors = np.full((len(items), 2), np.nan), np.full((len(items), 2), np.nan)
    rejects: list[dict[str, str]] = []
    for kept, images, matched in decoded_batches(items, size_of=lambda item: (item.height, item.width),
                                                 batch_size=batch_size, stage=stage, desc=stage, rejects=rejects):
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)  # (B, 3, H, W) uint8
        result = checked_errors(autoencoder, pixels, twice=twice, per_image=per_image)
        if isinstance(result, str):  # one size per batch: every image of it fails alike
            log.warning("%s: %d image(s) rejected: %s", stage, len(kept), result)
            rejects.extend({"path": items[i].path, "stage": stage, "reason": result} for i in kept)
            continue
        errors[kept] = result
        if matched:
            pixels = torch.from_numpy(np.stack([image for _, image in matched])).permute(0, 3, 1, 2).to(device)
            result = checked_errors(autoencoder, pixels, twice=twice, per_image=per_image)
            if not isinstance(result, str):  # the same size as the delivered images, which passed
                matched_errors[[kept[position] for position, _ in matched]] = result
    as_delivered = np.array([item.match is None for item in items], dtype=bool)
    matched_errors[as_delivered] = errors[as_delivered]
    return errors, matched_errors, rejects


def checked_errors(autoencoder: torch.nn.Module, pixels: torch.Tensor, *, twice: bool,
                   per_image: bool) -> np.ndarray | str:
    """roundtrip_errors, or why the autoencoder cannot take images of this size (a reject reason)."""
    try:
        return roundtrip_errors(autoencoder, pixels, twice=twice, per_image=per_image)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError) as error:
        # e.g. a few-pixel image whose latent is 1 x 1: GroupNorm has a single value per group. Evaluate scores
        # any image; the autoencoder has such limits, so these are rejects rather than the end of the run.
        height, width = pixels.shape[-2:]
        message = str(error).splitlines()[0] if str(error) else ""  # torch's size errors name shapes only
        return f"the autoencoder cannot round-trip a {width}x{height} image: {type(error).__name__}: {message}"


def score_pairs(autoencoder: torch.nn.Module, reals: list[ScoreItem], fakes: list[ScoreItem], *, twice: bool,
                batch_size: int, per_image: bool, device: torch.device, stage: str,
                rejects: Sequence[dict[str, str]] = (), unmatched: Collection[str] | None = None) -> ReferenceScores:
    """Errors of `reals` and `fakes`; `rejects` (found before decoding) join the decode rejects.

    With `unmatched` (the paths format matching left out, format_match.py) the format-matched errors are kept
    too, NaN for those paths."""
    items = reals + fakes
    errors, matched_errors, decode_rejects = score_items(autoencoder, items, twice=twice, batch_size=batch_size,
                                                         per_image=per_image, device=device, stage=stage)
    labels = np.array([0] * len(reals) + [1] * len(fakes))
    kept = np.isfinite(errors[:, 0])
    if unmatched:
        matched_errors[[item.path in unmatched for item in items]] = np.nan
    scored = ReferenceScores([item.path for item, keep in zip(items, kept, strict=True) if keep], labels[kept],
                             errors[kept], sorted([*rejects, *decode_rejects], key=lambda r: r["path"]),
                             matched_errors[kept] if unmatched is not None else None)
    for label, kind in ((0, "real"), (1, "fake")):
        if not (scored.labels == label).any():
            raise DataError(f"{stage}: none of its {kind} images could be scored ({len(scored.rejects)} rejected, "
                            f"e.g. {scored.rejects[:1]})")
    return scored


def score_metrics(scored: ReferenceScores, name: Score, *, threshold: float, where: str = "") -> dict[str, float]:
    """AP, AUC and real/fake/balanced accuracy of one score at its threshold (and format-matched, when scored)."""
    metrics = detection_metrics(scored.labels, scored.score(name), threshold=threshold)
    values = {key: metrics[key] for key in METRIC_KEYS}
    if scored.matched_errors is not None:
        matched = matched_metrics(scored.labels, scored.matched_score(name), threshold=threshold,
                                  where=f"reference set '{where}'")
        values |= {key: matched[key] for key in MATCHED_METRIC_KEYS}
    return values


def counts(scored: ReferenceScores) -> dict[str, int]:
    """Images scored per class and rejected (and, format-matched, per class)."""
    values = {"n_real": int((scored.labels == 0).sum()), "n_fake": int((scored.labels == 1).sum()),
              "rejected": len(scored.rejects)}
    if scored.matched_errors is not None:
        kept = np.isfinite(scored.matched_errors[:, 0])
        values |= {"n_real_matched": int((scored.labels[kept] == 0).sum()),
                   "n_fake_matched": int((scored.labels[kept] == 1).sum())}
    return values


def run_reference(config: ReferenceConfig, *, autoencoder_dir: Path, manifest_dir: Path,
                  cache: Path | None = None) -> tuple[dict[str, Any], dict[str, ReferenceScores], dict[str, Any]]:
    """Return (metrics for reference.json, scored images per folder: calibration then each test set, run info)."""
    check_watched([(f"reference.test_sets[{index}]", path, test_set.checksum)
                   for index, test_set in enumerate(config.test_sets) for path in test_set.paths()],
                  watch=config.watch, section="reference")
    validation = resolve_validation(ValidationSet(), val_manifest=manifest_dir / "val.csv", cache=cache,
                                    stage=f"reference:{CALIBRATION}")
    reals, fakes = calibration_items(validation, n_per_class=config.n_per_class, seed=config.seed)  # as threshold
    test_sets = [item for test_set in config.test_sets
                 for item in resolve_test_set(test_set, manifest_dir=manifest_dir, cache=cache)]
    names = [item.name for item in test_sets]
    if len(set(names)) != len(names) or CALIBRATION in names:
        raise DataError(f"reference.test_sets yield the set names {names}: they must be unique and not "
                        f"'{CALIBRATION}' (give a root a name to prefix its generators)")
    device = pick_device(config.device)
    autoencoder, info = load_autoencoder(autoencoder_dir, device=device)
    autoencoder = autoencoder.to(memory_format=torch.channels_last)
    per_image = device.type == "cpu"  # as reconstruct's forward=auto: scores independent of the batch size
    options = {"twice": "ratio" in config.scores, "batch_size": config.batch_size, "per_image": per_image,
               "device": device}
    started = time.perf_counter()
    scored = {CALIBRATION: score_pairs(autoencoder, reals, fakes, stage=f"reference:{CALIBRATION}", **options)}
    for test_set in test_sets:
        stage = f"reference:{test_set.name}"
        matching = plan_matching(test_set, quality=config.format_match.quality)
        scored[test_set.name] = score_pairs(autoencoder, matching.reals, matching.fakes, stage=stage,
                                            rejects=[reject | {"stage": stage} for reject in test_set.rejects],
                                            unmatched=matching.unmatched, **options)
    seconds = time.perf_counter() - started
    calibration, sets = scored[CALIBRATION], {name: s for name, s in scored.items() if name != CALIBRATION}
    metrics: dict[str, Any] = {"counts": {name: counts(s) for name, s in scored.items()}}
    for name in config.scores:
        threshold = select_threshold(calibration.labels, calibration.score(name), criterion=config.criterion,
                                     target_fpr=config.target_fpr, fixed=config.fixed)  # val only
        per_set = {set_name: score_metrics(s, name, threshold=threshold, where=set_name)
                   for set_name, s in sets.items()}
        mean = {key: float(np.mean([values[key] for values in per_set.values()]))
                for key in (*METRIC_KEYS, *MATCHED_METRIC_KEYS)}
        metrics[name] = {"threshold": threshold, CALIBRATION: score_metrics(calibration, name, threshold=threshold),
                         **mean, "sets": per_set}
    images = sum(len(s.paths) for s in scored.values())
    run_info = {"autoencoder": info["label"], "autoencoder_class": info["class"], "trained": info["trained"],
                "device": str(device), "forward": "per_image" if per_image else "batched",
                "round_trips_per_image": 2 if options["twice"] else 1, "images": images, "seconds": seconds,
                "images_per_second": images / seconds if seconds else 0.0}
    return metrics, scored, run_info


def write_reference_scores(folder: Path, scored: ReferenceScores, *, thresholds: Mapping[str, float]) -> None:
    """folder/scores.csv (errors, each score and its call at its threshold; format-matched errors and scores when
    scored so, blank where unmatched) and folder/rejects.csv."""
    names = list(thresholds)
    values = {name: scored.score(name) for name in names}
    matched = scored.matched_errors is not None
    matched_values = {name: scored.matched_score(name) for name in names} if matched else {}

    def number(value: float) -> str:
        return f"{value:.6f}" if np.isfinite(value) else ""

    rows = []
    for index, (path, label, (e1, e2)) in enumerate(zip(scored.paths, scored.labels, scored.errors, strict=True)):
        row = {"path": path, "label": "fake" if label else "real", "e1": f"{e1:.6f}", "e2": number(e2)}
        for name in names:
            row[name] = f"{values[name][index]:.6f}"
            row[f"called_{name}"] = "fake" if values[name][index] > thresholds[name] else "real"
        if matched:
            row |= {"e1_matched": number(scored.matched_errors[index, 0]),
                    "e2_matched": number(scored.matched_errors[index, 1])}
            row |= {f"{name}_matched": number(matched_values[name][index]) for name in names}
        rows.append(row)
    columns = ["path", "label", "e1", "e2", *names, *(f"called_{n}" for n in names)]
    if matched:
        columns += ["e1_matched", "e2_matched", *(f"{n}_matched" for n in names)]
    write_csv(folder / "scores.csv", rows, columns)
    write_csv(folder / "rejects.csv", scored.rejects, ("path", "stage", "reason"))
