"""DVC stage `report`: report/report.md, one page with every result, and report/roc/, every detector's ROC per set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library, also in exp runs

from aligned_forensics.common.cli import load_config, run_stage, stage_parser  # noqa: E402
from aligned_forensics.common.io import atomic_write_text  # noqa: E402
from aligned_forensics.evaluation.compare import write_comparisons  # noqa: E402
from aligned_forensics.evaluation.report import ReportConfig, build_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--out", type=Path, default=Path("report/report.md"))
    parser.add_argument("--roc", type=Path, default=Path("report/roc"), help="validation.json, test/<set>.json")

    def body(args) -> str:
        config = load_config(args.params, "report", ReportConfig)
        link_prefix = Path(os.path.relpath(args.metrics, args.out.parent)).as_posix()
        atomic_write_text(args.out, build_report(config, metrics_dir=args.metrics, link_prefix=link_prefix))
        compared = write_comparisons(args.metrics, args.roc)
        return f"wrote {args.out} and {len(compared)} ROC comparison(s) in {args.roc}"

    return run_stage("report", parser, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
