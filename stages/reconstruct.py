"""DVC stage `reconstruct`: every real image through the autoencoder into data/fake/<split>/<stem>.png."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.io import write_json  # noqa: E402
from aligned_forensics.reconstruct import ReconstructConfig, run_reconstruct  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", type=Path, default=Path("data/fetch/index.csv"))
    parser.add_argument("--autoencoder", type=Path, default=Path("data/autoencoder"))
    parser.add_argument("--out", type=Path, default=Path("data/fake"))
    parser.add_argument("--rejects", type=Path, default=Path("data/reconstruct/rejects.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/reconstruct.json"))

    def body(args) -> str:
        config = load_config(args.params, "reconstruct", ReconstructConfig)
        stats = run_reconstruct(config, index_path=args.index, autoencoder_dir=args.autoencoder,
                                out_dir=args.out, rejects_path=args.rejects)
        write_json(args.metrics, stats)
        return (f"{stats['images']:,} images ({stats['rejected']:,} rejected), {stats['images_per_second']:.1f} img/s, "
                f"PSNR mean {stats['psnr_mean']:.2f} dB")

    return run_stage("reconstruct", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
