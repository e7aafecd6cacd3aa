"""The ``cp2`` command line: a thin dispatcher over the subcommand modules in ``commands/``.

Each module in :mod:`cp2_engine.commands` defines ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Adding a subcommand means adding a module name to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

_COMMANDS = (
    "segment",
    "eval",
    "models",
    "demo",
    "train",
    "experiment",
    "zoo",
)


def _load_commands() -> list:
    modules = []
    for name in _COMMANDS:
        try:
            modules.append(importlib.import_module(f"cp2_engine.commands.{name}"))
        except ModuleNotFoundError as err:
            if err.name != f"cp2_engine.commands.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="cp2", description="cp2: cell segmentation, training and human-in-the-loop."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _load_commands():
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
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as err:
        print(f"cp2 {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
