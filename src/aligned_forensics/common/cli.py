"""What every stage script shares: logging, params loading and turning user errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from aligned_forensics.common.errors import UserError
from aligned_forensics.common.io import NO_SPACE, disk_full
from aligned_forensics.common.params import build_config, load_section

T = TypeVar("T")
log = logging.getLogger("aligned_forensics")


def stage_parser(description: str) -> argparse.ArgumentParser:
    """An argparse parser with the `--params` option every stage takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    return parser


def load_config(params_path: Path, section: str, config_class: type[T]) -> T:
    """Read `section` of the params file into `config_class`, validating every key."""
    return build_config(config_class, load_section(params_path, section), section=section)


def run_stage(
    name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], str], argv: Sequence[str] | None
) -> int:
    """Parse argv, run `body` (which returns a one-line summary) and map UserError (and a full disk) to exit 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("AF_LOGLEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    try:
        summary = body(args)
    except UserError as error:
        log.error("%s failed: %s", name, error)
        return 2
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        # a writer outside io.py (dvclive, a library) ran out of space: the same message, not a traceback
        log.error("%s failed: %s", name, disk_full(error))
        return 2
    log.info("%s done in %.1f s: %s", name, time.perf_counter() - started, summary)
    return 0
