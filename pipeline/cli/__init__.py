"""``bmtl``: thin console entry points over the ``pipeline`` package.

Each sub-command parses its arguments and calls one library function; the work lives in the package so that it is
usable (and tested) without the CLI. The sub-commands are registered by topic: ``data`` (prepare, check-splits, dedup,
synth), ``runs`` (networks, train, evaluate, cv, compare, demo) and ``deployment`` (export, verify, predict,
log-model).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.common import EXIT_FAILED, EXIT_USAGE
from pipeline.cli.data import add_data_commands
from pipeline.cli.deployment import add_deployment_commands
from pipeline.cli.runs import add_runs_commands

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``bmtl`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="bmtl",
        description="Breast tumour segmentation + classification with MONAI: data preparation, networks, demo.",
    )
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"bmtl (breast-mtl) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(sub)
    add_runs_commands(sub)
    add_deployment_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bmtl`` with ``argv`` (default: the command line); returns the exit code (2: usage error, bad option
    value or missing file; 1: the command failed, e.g. bad data; the command's own code otherwise)."""
    from pipeline.data.io import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_USAGE
