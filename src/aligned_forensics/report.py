"""One page a user opens after `dvc repro`: data, pairs, training, threshold, test sets, robustness."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aligned_forensics.errors import UserError


@dataclass(frozen=True)
class ReportConfig:
    """params.yaml `report`."""

    title: str = "Aligned-dataset fake-image detector"


def build_report(config: ReportConfig, *, metrics_dir: Path) -> str:
    """Markdown for metrics_dir/report.md; pictures are linked relative to metrics_dir."""
    read = _reader(metrics_dir)
    fetch, reconstruct, manifest = read("fetch.json"), read("reconstruct.json"), read("manifest.json")
    train, threshold, evaluation = read("train/metrics.json"), read("threshold.json"), read("eval.json")
    lines = [f"# {config.title}", "", "## Data", "",
             "| reals fetched | train / val / test | rejected (fetch, reconstruct, manifest) | formats real→fake |",
             "| --- | --- | --- | --- |",
             f"| {fetch['images']:,} | {manifest['pairs_train']:,} / {manifest['pairs_val']:,} / "
             f"{manifest['pairs_test']:,} pairs | {fetch['rejected']} / {reconstruct['rejected']} / "
             f"{manifest['rejected']} | {', '.join(f'{k}: {v:,}' for k, v in manifest['formats'].items())} |",
             "", f"Autoencoder **{reconstruct['autoencoder']}** ({reconstruct['autoencoder_class']}, "
             f"{reconstruct['dtype']}): PSNR real vs reconstruction {reconstruct['psnr_mean']:.2f} dB mean, "
             f"{reconstruct['psnr_min']:.2f} dB min.", "", "![pairs](reconstruct/pairs.png)", "",
             "## Training", "", f"Best validation balanced accuracy **{train['best_val_bacc']:.4f}** at epoch "
             f"{train['best_epoch']} (AUC {train['best_val_auc']:.4f}, AP {train['best_val_ap']:.4f}).", "",
             "![training](train/curves.png)", "", "## Threshold", "",
             f"**{threshold['threshold']:.4f}** (logit; criterion `{threshold['criterion']}`) on "
             f"{threshold['n_real']:,} real + {threshold['n_fake']:,} fake validation images: balanced accuracy "
             f"{threshold['bacc']:.4f} (at logit 0: {threshold['bacc_at_0']:.4f}).", "",
             "## Test sets", "", summary_table(evaluation).rstrip(), ""]
    lines += [f"![{name}](eval/curves/{name}.png)" for name in evaluation["sets"]]
    sweeps = read("eval/sweeps.json", missing_ok=True)
    if sweeps:
        lines += ["", "## Robustness", "", "| level | mean P(fake) reals | mean P(fake) fakes | bacc | AP |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {label} | {row['mean_p_fake_real']:.3f} | {row['mean_p_fake_fake']:.3f} | {row['bacc']:.4f} | "
                  f"{row['ap']:.4f} |" for label, row in sweeps.items()]
        lines += ["", "![robustness](eval/sweeps.png)"]
    return "\n".join(lines) + "\n"


def _reader(metrics_dir: Path):
    def read(name: str, *, missing_ok: bool = False) -> dict[str, Any]:
        path = metrics_dir / name
        if missing_ok and not path.is_file():
            return {}
        if not path.is_file():
            raise UserError(f"{path} not found: run `dvc repro` (the report reads every stage's metrics)")
        return json.loads(path.read_text())

    return read


def summary_table(metrics: dict[str, Any]) -> str:
    """A markdown table: one row per test set and the mean."""
    columns = ("n_real", "n_fake", "ap", "auc", "real_acc", "fake_acc", "bacc", "bacc_at_0", "tpr_at_5pct_fpr")
    lines = ["| set | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    rows = [*metrics["sets"].items(), ("**mean**", metrics)]
    for name, values in rows:
        cells = [f"{values[c]:,}" if c.startswith("n_") else f"{values[c]:.4f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
