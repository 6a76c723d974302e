"""DVC stage `manifest`: pair reals and reconstructions by stem into data/manifest/{train,val,test}.csv."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.io import pick, write_metrics  # noqa: E402
from aligned_forensics.data.manifest import ManifestConfig, build_manifest, write_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", type=Path, default=Path("data/fetch/index.csv"))
    parser.add_argument("--fake", type=Path, default=Path("data/fake"))
    parser.add_argument("--upstream-rejects", type=Path, nargs="*", default=[Path("data/reconstruct/rejects.csv")])
    parser.add_argument("--out", type=Path, default=Path("data/manifest"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/manifest.json"))

    def body(args) -> str:
        config = load_config(args.params, "manifest", ManifestConfig)
        rows, rejects = build_manifest(config, index_path=args.index, fake_dir=args.fake,
                                       upstream_rejects=args.upstream_rejects)
        counts = write_manifest(rows, rejects, args.out)
        write_metrics(args.metrics, counts, declared=pick(counts, "rejected"))
        return ", ".join(f"{split}={len(split_rows):,} pairs" for split, split_rows in rows.items()) + \
            f", {len(rejects):,} rejected"

    return run_stage("manifest", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
