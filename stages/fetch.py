"""DVC stage `fetch`: real images from `fetch.sources` into data/real/<split>/, plus an index."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.download import DOWNLOADS_ENV, downloads_dir  # noqa: E402
from aligned_forensics.common.io import pick, write_metrics  # noqa: E402
from aligned_forensics.data.fetch import FetchConfig, describe_dry_run, run_fetch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/real"))
    parser.add_argument("--index", type=Path, default=Path("data/fetch/index.csv"))
    parser.add_argument("--rejects", type=Path, default=Path("data/fetch/rejects.csv"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/fetch.json"))
    parser.add_argument("--downloads", type=Path, default=None,
                        help=f"download cache (default: ${DOWNLOADS_ENV}, else data/downloads)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be downloaded and selected; "
                        "touch nothing")

    def body(args) -> str:
        config = load_config(args.params, "fetch", FetchConfig)
        if args.dry_run:
            lines, summary = describe_dry_run(config, downloads_dir(args.downloads))
            print("\n".join(lines))
            return summary
        counts = run_fetch(config, downloads=downloads_dir(args.downloads), out_dir=args.out,
                           index_path=args.index, rejects_path=args.rejects)
        write_metrics(args.metrics, counts, declared=pick(counts, "rejected"))
        return ", ".join(f"{key}={value:,}" for key, value in counts.items() if isinstance(value, int))

    return run_stage("fetch", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
