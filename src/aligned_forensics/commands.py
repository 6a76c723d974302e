"""The `aligned-forensics` console command: `predict` scores images, `preset` writes params.yaml from a preset.

Only argparse and the light parts of the library load here, so `--help` answers at once; each subcommand imports
what it needs (torch, OpenCV) when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aligned_forensics import __version__
from aligned_forensics.common.errors import UserError
from aligned_forensics.common.presets import apply_preset, display
from aligned_forensics.evaluation import predict

DESCRIPTION = """\
Aligned-dataset fake-image detectors. `predict` scores images with a trained detector; `preset` writes params.yaml
from one of presets/. The pipeline itself runs with `dvc repro` (README).
"""
PRESET_HELP = """\
Merge a preset over the files it extends (`extends: paper-sync.yaml`), validate every stage's section and write
the complete configuration to params.yaml (or --out), with a header naming the preset. Mappings merge key by key,
recursively; lists and scalars replace the base's value whole (e.g. `fetch.sources` is replaced as one list).
A key that is not in the base, a wrong value, or an `extends` cycle fails with the file and the key's full name.

  aligned-forensics preset presets/sd-vae.yaml && dvc repro
  aligned-forensics preset presets/paper.yaml --check
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with its `predict` and `preset` subcommands."""
    parser = argparse.ArgumentParser(prog="aligned-forensics", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict_parser = commands.add_parser("predict", help="score images with a trained detector",
                                         description=predict.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_arguments(predict_parser)
    predict_parser.set_defaults(handler=predict.run)
    preset_parser = commands.add_parser("preset", help="write params.yaml from a preset in presets/",
                                        description=PRESET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    preset_parser.add_argument("preset", type=Path, help="the preset file, e.g. presets/sd-vae.yaml")
    preset_parser.add_argument("--out", type=Path, default=Path("params.yaml"),
                               help="where to write the complete configuration (default: %(default)s)")
    preset_parser.add_argument("--check", action="store_true", help="only merge and validate; write nothing")
    preset_parser.set_defaults(handler=run_preset)
    return parser


def run_preset(args: argparse.Namespace) -> int:
    """`aligned-forensics preset`: 0 when written (or valid with --check), 2 with the reason otherwise."""
    try:
        resolved = apply_preset(args.preset, args.out, preset_arg=display(args.preset), check_only=args.check)
    except UserError as error:
        print(f"aligned-forensics preset: {error}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{resolved.describe()}: valid ({len(resolved.document)} sections); nothing written")
    else:
        print(f"wrote {display(args.out)} from {resolved.describe()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `aligned-forensics` script (pyproject.toml [project.scripts])."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
