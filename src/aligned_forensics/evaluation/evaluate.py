"""The evaluate stage: every test set scored at the calibrated threshold and at logit 0, plus robustness sweeps."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aligned_forensics.common.devices import pick_device
from aligned_forensics.common.errors import DataError, UserError
from aligned_forensics.common.image_sets import ResolvedSet, ScoreItem, TestSet, resolve_test_set
from aligned_forensics.common.params import require
from aligned_forensics.common.watch import NOTHING_OUTSIDE, check_watched
from aligned_forensics.detector.checkpoints import load_detector
from aligned_forensics.detector.metrics import detection_at_false_alarm, detection_metrics, equal_error_rate
from aligned_forensics.evaluation.degradations import NO_DEGRADATION, Degradation
from aligned_forensics.evaluation.format_match import MATCHED_KEYS, FormatMatch, matched_metrics, plan_matching
from aligned_forensics.evaluation.scoring import ScoringOptions, score_with_matched
from aligned_forensics.evaluation.threshold import ScoredImages

FALSE_ALARM_RATES = {"pd_at_1pct_far": 0.01, "pd_at_5pct_far": 0.05, "pd_at_10pct_far": 0.10}  # DMimageDetection's
AVERAGED = ("ap", "auc", "real_acc", "fake_acc", "bacc", "real_acc_at_0", "fake_acc_at_0", "bacc_at_0", "eer",
            *FALSE_ALARM_RATES, *(f"{key}_matched" for key in MATCHED_KEYS))


@dataclass(frozen=True)
class SweepConfig:
    """params.yaml `evaluate.sweeps`: post-processing levels applied to one test set before scoring."""

    test_set: str = ""  # the set to sweep; "" = no sweeps
    jpeg: tuple[int, ...] = ()  # JPEG qualities
    webp: tuple[int, ...] = ()  # WebP qualities
    resize: tuple[float, ...] = ()  # aspect-preserving scale factors, e.g. 0.25 .. 2 (bilinear)
    resize_square: tuple[int, ...] = ()  # square sides in pixels, bicubic, aspect not kept: the paper's Fig. 2

    def levels(self) -> list[Degradation]:
        return ([Degradation("jpeg", q) for q in self.jpeg] + [Degradation("webp", q) for q in self.webp]
                + [Degradation("resize", f) for f in self.resize]
                + [Degradation("resize_square", side) for side in self.resize_square])


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml `evaluate`."""

    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    test_sets: tuple[TestSet, ...] = (TestSet(name="test", split="test"),)
    sweeps: SweepConfig = field(default_factory=SweepConfig)
    format_match: FormatMatch = field(default_factory=FormatMatch)  # every set also scored without the format cue
    watch: str = NOTHING_OUTSIDE  # the outside folder/archive it reads, a DVC dependency (common/watch.py)

    def __post_init__(self) -> None:
        self.scoring.check("evaluate.scoring")
        self.format_match.check("evaluate.format_match")
        for index, test_set in enumerate(self.test_sets):
            test_set.check(f"evaluate.test_sets[{index}]")
        names = [test_set.name for test_set in self.test_sets if not test_set.root]  # a root's names: at run time
        require(len(self.test_sets) >= 1 and len(set(names)) == len(names), "evaluate.test_sets",
                "at least one set, names unique", names)
        if not any(test_set.root for test_set in self.test_sets):  # else checked once the roots are listed
            require(not self.sweeps.test_set or self.sweeps.test_set in names, "evaluate.sweeps.test_set",
                    f"one of {names} (or '' for no sweeps)", self.sweeps.test_set)
        require(all(1 <= q <= 100 for q in (*self.sweeps.jpeg, *self.sweeps.webp)), "evaluate.sweeps.jpeg/webp",
                "qualities in 1..100", (self.sweeps.jpeg, self.sweeps.webp))
        require(all(0 < f <= 8 for f in self.sweeps.resize), "evaluate.sweeps.resize", "factors in (0, 8]",
                self.sweeps.resize)
        require(all(8 <= side <= 8192 for side in self.sweeps.resize_square), "evaluate.sweeps.resize_square",
                "square sides in pixels, 8..8192", self.sweeps.resize_square)

    def watched_paths(self) -> list[tuple[str, str, str]]:
        """(params key, path, checksum) of every outside path the sets read, for check_watched."""
        return [(f"evaluate.test_sets[{index}]", path, test_set.checksum)
                for index, test_set in enumerate(self.test_sets) for path in test_set.paths()]


def read_threshold(path: Path) -> float:
    """The calibrated threshold from metrics/threshold.json."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro threshold` first")
    return float(json.loads(path.read_text())["threshold"])


def set_metrics(scored: ScoredImages, *, threshold: float, rejected: int) -> dict[str, Any]:
    """The per-set numbers: detection metrics at the threshold and at 0, EER, Pd at 1/5/10 % false alarms, and
    mean P(fake) per class."""
    metrics = detection_metrics(scored.labels, scored.scores, threshold=threshold)
    probability = 1.0 / (1.0 + np.exp(-scored.scores))
    rates = {key: detection_at_false_alarm(scored.labels, scored.scores, far) for key, far in FALSE_ALARM_RATES.items()}
    return metrics | rates | {"eer": equal_error_rate(scored.labels, scored.scores), "rejected": rejected,
                      "mean_p_fake_real": float(probability[scored.labels == 0].mean()),
                      "mean_p_fake_fake": float(probability[scored.labels == 1].mean())}


def resolve_all(config: EvaluateConfig, *, manifest_dir: Path, cache: Path | None = None) -> list[ResolvedSet]:
    """Every test set, a root expanded to one per generator; names must come out unique."""
    resolved = [item for test_set in config.test_sets
                for item in resolve_test_set(test_set, manifest_dir=manifest_dir, cache=cache)]
    names = [item.name for item in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"evaluate.test_sets yield the set name(s) {duplicates} more than once (a root's generator "
                        "folders are named after their folders; give the root a name to prefix them)")
    if config.sweeps.test_set and config.sweeps.test_set not in names:
        raise DataError(f"evaluate.sweeps.test_set {config.sweeps.test_set!r} is not one of the sets {names} "
                        "(or '' for no sweeps)")
    return resolved


def run_evaluate(config: EvaluateConfig, *, model_path: Path, manifest_dir: Path, threshold_path: Path,
                 cache: Path | None = None, arch: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, ScoredImages], dict[str, dict[str, Any]]]:
    """Return (metrics: averaged + per set, scored images per set, sweep metrics per level label).

    `cache` holds downloaded and unpacked archives that test sets name; `arch` is the architecture of a model
    file that records none (a released checkpoint)."""
    check_watched(config.watched_paths(), watch=config.watch, section="evaluate")
    resolved_sets = resolve_all(config, manifest_dir=manifest_dir, cache=cache)
    threshold = read_threshold(threshold_path)
    device = pick_device(config.device)
    model, payload = load_detector(model_path, device=device, arch=arch)
    crop_size = config.scoring.crop_size or payload["preprocessing"]["train_crop"]

    def score(reals: list[ScoreItem], fakes: list[ScoreItem], name: str, degradation: Degradation,
              unmatched: Collection[str] | None = None) -> ScoredImages:
        """Scores as delivered; with `unmatched` (format_match.py) also format-matched, NaN for those paths."""
        items = reals + fakes
        desc = name if degradation == NO_DEGRADATION else f"{name} {degradation.label}"
        scores, matched, rejects = score_with_matched(model, items, protocol=config.scoring.protocol,
                                                      crop_size=crop_size, batch_size=config.scoring.batch_size,
                                                      device=device, stage=f"evaluate:{name}", desc=desc,
                                                      degradation=degradation)
        labels = np.array([0] * len(reals) + [1] * len(fakes))
        kept = np.isfinite(scores)
        if unmatched:
            matched[[item.path in unmatched for item in items]] = np.nan
        return ScoredImages([item.path for item, keep in zip(items, kept, strict=True) if keep], labels[kept],
                            scores[kept], rejects, matched[kept] if unmatched is not None else None)

    per_set, scored_sets, sweeps = {}, {}, {}
    for test_set in resolved_sets:
        name, reals, fakes = test_set.name, test_set.reals, test_set.fakes
        matching = plan_matching(test_set, quality=config.format_match.quality)
        scored = score(matching.reals, matching.fakes, name, NO_DEGRADATION, unmatched=matching.unmatched)
        scored = ScoredImages(scored.paths, scored.labels, scored.scores,
                              sorted(test_set.rejects + scored.rejects, key=lambda r: r["path"]), scored.matched)
        for label, kind in ((0, "real"), (1, "fake")):
            if not (scored.labels == label).any():
                raise DataError(f"test set '{name}': none of its {kind} images could be scored "
                                f"({len(scored.rejects)} rejected, e.g. {scored.rejects[:1]})")
        scored_sets[name] = scored
        per_set[name] = (set_metrics(scored, threshold=threshold, rejected=len(scored.rejects))
                         | matched_metrics(scored.labels, scored.matched, threshold=threshold,
                                           where=f"test set '{name}'") | {"unmatched": len(matching.unmatched)})
        if name == config.sweeps.test_set:
            for level in config.sweeps.levels():
                degraded = score(reals, fakes, name, level)
                sweeps[level.label] = {"kind": level.kind, "level": level.level,
                                       **set_metrics(degraded, threshold=threshold, rejected=len(degraded.rejects))}
    mean = {key: float(np.mean([metrics[key] for metrics in per_set.values()])) for key in AVERAGED}
    totals = {key: sum(metrics[key] for metrics in per_set.values())
              for key in ("n_real", "n_fake", "rejected", "n_real_matched", "n_fake_matched", "unmatched")}
    summary = {"threshold": threshold, "protocol": config.scoring.protocol, **mean, **totals, "sets": per_set}
    return summary, scored_sets, sweeps
