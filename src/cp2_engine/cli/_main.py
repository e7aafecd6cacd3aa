"""The ``cp2`` command line: a thin dispatcher over the subcommand modules of this package.

Each subcommand module (``_segment``, ``_eval``, ...) defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Adding a subcommand means adding its module
to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cp2_engine.cli import (
    _demo,
    _eval,
    _experiment,
    _export,
    _hitl,
    _measure,
    _models,
    _rois,
    _segment,
    _train,
    _zoo,
)

_COMMANDS = (
    _segment, _eval, _measure, _rois, _models, _export, _demo, _train, _experiment, _hitl, _zoo,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="cp2", description="cp2: cell segmentation, training and human-in-the-loop."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        sp = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``cp2`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from cp2_engine.util import tune_allocator

    tune_allocator()  # before any thread or large buffer exists (training ~1.4x faster on CPU)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as err:
        print(f"cp2 {args.command}: error: {err}", file=sys.stderr)
        return 2
