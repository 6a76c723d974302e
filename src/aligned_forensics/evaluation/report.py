"""One page a user opens after `dvc repro`: data, pairs, training, threshold, test sets, robustness."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligned_forensics.common.errors import UserError


@dataclass(frozen=True)
class ReportConfig:
    """params.yaml `report`."""

    title: str = "Aligned-dataset fake-image detector"


def build_report(config: ReportConfig, *, metrics_dir: Path, link_prefix: str = ".") -> str:
    """Markdown for one page; pictures (files under metrics_dir) are linked as link_prefix/<file>."""
    return relink(_report_lines(config, metrics_dir=metrics_dir), link_prefix)


def relink(markdown: str, prefix: str) -> str:
    """Prefix every relative image link, so the page can live outside metrics_dir."""
    return markdown if prefix in ("", ".") else re.sub(r"(!\[[^\]]*\]\()(?![a-z]+:|/)", rf"\g<1>{prefix}/", markdown)


def _report_lines(config: ReportConfig, *, metrics_dir: Path) -> str:
    """The report's markdown with picture links relative to metrics_dir."""
    read = _reader(metrics_dir)
    fetch, reconstruct, manifest = read("info/fetch.json"), read("info/reconstruct.json"), read("info/manifest.json")
    train, threshold, evaluation = read("info/train.json"), read("info/threshold.json"), read("info/eval.json")
    lines = [f"# {config.title}", "", "## Data", "",
             "| reals fetched | train / val / test | rejected (fetch, reconstruct, manifest) | formats real→fake |",
             "| --- | --- | --- | --- |",
             f"| {fetch['images']:,} | {manifest['pairs_train']:,} / {manifest['pairs_val']:,} / "
             f"{manifest['pairs_test']:,} pairs | {fetch['rejected']} / {reconstruct['rejected']} / "
             f"{manifest['rejected']} | {', '.join(f'{k}: {v:,}' for k, v in manifest['formats'].items())} |",
             "", f"Autoencoder **{reconstruct['autoencoder']}** ({reconstruct['autoencoder_class']}, "
             f"{reconstruct['dtype']}): PSNR real vs reconstruction {reconstruct['psnr_mean']:.2f} dB mean, "
             f"{reconstruct['psnr_min']:.2f} dB min.", "", "![pairs](reconstruct/pairs.png)", "",
             "## Training", "", best_epoch_line(train), "",
             "![training](train/curves.png)", "", "## Threshold", "",
             f"**{threshold['threshold']:.4f}** (logit; criterion `{threshold['criterion']}`) on "
             f"{threshold['n_real']:,} real + {threshold['n_fake']:,} fake validation images: balanced accuracy "
             f"{threshold['bacc']:.4f} (at logit 0: {threshold['bacc_at_0']:.4f}).", "",
             "## Test sets", "", summary_table(evaluation).rstrip(), ""]
    lines += [f"![{name}](eval/curves/{name}.png)" for name in evaluation["sets"]]
    lines += format_section(read, detector=evaluation)
    sweeps = read("eval/sweeps.json", missing_ok=True)
    if sweeps:
        lines += ["", "## Robustness", "", "| level | mean P(fake) reals | mean P(fake) fakes | bacc | AP |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {label} | {row['mean_p_fake_real']:.3f} | {row['mean_p_fake_fake']:.3f} | {row['bacc']:.4f} | "
                  f"{row['ap']:.4f} |" for label, row in sweeps.items()]
        lines += ["", "![robustness](eval/sweeps.png)"]
    if (metrics_dir / "stay_positive" / "eval.json").is_file():
        lines += stay_positive_section(read, base=evaluation, base_sweeps=sweeps)
    reference = read("info/reference.json", missing_ok=True)
    if reference:
        lines += reference_section(reference, detector=evaluation)
    return "\n".join(lines) + "\n"


REFERENCE_COLUMNS = ("ap", "ap_matched", "auc", "auc_matched", "bacc", "bacc_matched", "real_acc", "fake_acc")


def format_section(read, *, detector: dict[str, Any]) -> list[str]:
    """Per detector, one line: how much of its mean test AP the file format explains (format_match.py)."""
    scorers = [("detector", detector)]
    positive = read("stay_positive/info/eval.json", missing_ok=True)
    if positive:
        scorers.append(("stay-positive detector", positive))
    reference = read("info/reference.json", missing_ok=True)
    scorers += [(f"reference `{score}`", values) for score, values in reference.items() if score != "counts"]
    lines = ["", "## The file format's share", "",
             "Each test set scored again with the format cue removed (docs/format-matched-evaluation.md): a fake "
             "re-encoded with its own real's JPEG compression; unpaired sets, both classes at one JPEG quality. "
             "Mean over the test sets:", ""]
    return lines + [f"* {name}: {format_share(values['ap'], values['ap_matched'])}." for name, values in scorers]


def format_share(delivered_ap: float, matched_ap: float) -> str:
    """One sentence: how much of the AP the file format explains."""
    drop = delivered_ap - matched_ap
    verdict = (f"the file format accounts for {drop:.3f} of the AP" if drop >= 0 else
               f"removing the format cue raises the AP by {-drop:.3f}")
    return f"AP {delivered_ap:.3f} as delivered, {matched_ap:.3f} with the format cue removed: {verdict}"


def reference_section(reference: dict[str, Any], *, detector: dict[str, Any]) -> list[str]:
    """The training-free round-trip scores beside the trained detector, per test set, each at its own threshold."""
    scores = [name for name in reference if name != "counts"]
    lines = ["", "## Training-free reference", "",
             "The same autoencoder's round-trip errors, no training (docs/evaluation.md): each score at its own "
             "threshold, calibrated on validation like the detector's.", "",
             "| set | scorer | " + " | ".join(REFERENCE_COLUMNS) + " |", "|" + " --- |" * (len(REFERENCE_COLUMNS) + 2)]
    for name in detector["sets"]:
        rows = [("detector", detector["sets"][name])]
        rows += [(f"reference `{score}`", reference[score]["sets"][name]) for score in scores
                 if name in reference[score]["sets"]]
        lines += [f"| {name} | {scorer} | " + " | ".join(f"{values[c]:.4f}" for c in REFERENCE_COLUMNS) + " |"
                  for scorer, values in rows]
    return lines


COMPARED = ("ap", "ap_matched", "auc", "bacc", "real_acc", "fake_acc", "bacc_at_0", "eer", "pd_at_5pct_far")


def stay_positive_section(read, *, base: dict[str, Any], base_sweeps: dict[str, Any]) -> list[str]:
    """The stay-positive model beside the base model: training, final-layer weights, test sets, robustness."""
    train, weights = read("stay_positive/info/train.json"), read("stay_positive/weights/summary.json")
    threshold, positive = read("stay_positive/info/threshold.json"), read("stay_positive/info/eval.json")
    top = read("stay_positive/weights/top.json")
    lines = ["", "## Stay-Positive", "",
             f"The final layer retrained with weights ≥ 0 on the frozen backbone: **{weights['positive']:,}** of "
             f"{weights['features']:,} weights positive, {weights['zero']:,} zero, {weights['negative']} negative, "
             f"bias {weights['bias']:.4f} (the input model had {weights['base_negative']:,} negative weights: features "
             f"that voted *real*). {best_epoch_line(train)} Calibrated threshold {threshold['threshold']:.4f} "
             f"(validation balanced accuracy {threshold['bacc']:.4f}).", "",
             "Base model → stay-positive model, each at its own calibrated threshold:", "",
             "| set | " + " | ".join(COMPARED) + " |", "|" + " --- |" * (len(COMPARED) + 1)]
    for name, values in [*base["sets"].items(), ("**mean**", base)]:
        other = positive["sets"].get(name) if name in base["sets"] else positive
        if other is not None:
            lines.append(f"| {name} | " + " | ".join(f"{values[c]:.4f} → {other[c]:.4f}" for c in COMPARED) + " |")
    positive_sweeps = read("stay_positive/eval/sweeps.json", missing_ok=True)
    if base_sweeps and positive_sweeps:
        columns = ("bacc", "ap", "mean_p_fake_real", "mean_p_fake_fake")
        lines += ["", "| level | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
        lines += [f"| {label} | " + " | ".join(f"{row[c]:.4f} → {positive_sweeps[label][c]:.4f}" for c in columns)
                  + " |" for label, row in base_sweeps.items() if label in positive_sweeps]
        lines += ["", "![stay-positive robustness](stay_positive/eval/sweeps.png)"]
    lines += ["", f"The {len(top)} largest final-layer weights (feature = channel of the last residual map):", "",
              "| rank | feature | weight | input model's weight |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['rank']} | {row['feature']} | {row['weight']:.5f} | {row['base_weight']:.5f} |" for row in top]
    lines += ["", "![final layer](stay_positive/weights/weights.png)", "",
              "![stay-positive training](stay_positive/train/curves.png)"]
    lines += [f"![{name}, stay-positive](stay_positive/eval/curves/{name}.png)" for name in positive["sets"]]
    return lines


def best_epoch_line(train: dict[str, Any]) -> str:
    """Which epoch became best.pt, by which validation metric, and its scores."""
    return (f"Best epoch **{train['best_epoch']}** (chosen by validation {train.get('selected_by', 'bacc')}): "
            f"balanced accuracy at logit 0 {train['best_val_bacc']:.4f}, AUC {train['best_val_auc']:.4f}, "
            f"AP {train['best_val_ap']:.4f}.")


def _reader(metrics_dir: Path):
    def read(name: str, *, missing_ok: bool = False) -> Any:
        path = metrics_dir / name
        if missing_ok and not path.is_file():
            return {}
        if not path.is_file():
            raise UserError(f"{path} not found: run `dvc repro` (the report reads every stage's metrics)")
        return json.loads(path.read_text())

    return read


def summary_table(metrics: dict[str, Any]) -> str:
    """A markdown table: one row per test set and the mean."""
    columns = ("n_real", "n_fake", "ap", "ap_matched", "auc", "auc_matched", "real_acc", "fake_acc", "bacc",
               "bacc_matched", "bacc_at_0", "eer", "pd_at_1pct_far", "pd_at_5pct_far", "pd_at_10pct_far")
    lines = ["| set | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    rows = [*metrics["sets"].items(), ("**mean**", metrics)]
    for name, values in rows:
        cells = [f"{values[c]:,}" if c.startswith("n_") else f"{values[c]:.4f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
