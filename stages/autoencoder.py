"""DVC stage `autoencoder`: materialise the configured autoencoder into data/autoencoder/ (pinned by dvc.lock)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.autoencoder.autoencoder import AutoencoderConfig, materialise_autoencoder  # noqa: E402
from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/autoencoder"))

    def body(args) -> str:
        config = load_config(args.params, "autoencoder", AutoencoderConfig)
        info = materialise_autoencoder(config, args.out)
        return f"{info['class']} '{info['label']}', {info['parameters']:,} parameters, {config.dtype} -> {args.out}"

    return run_stage("autoencoder", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
