"""Subcommands of the ``cp2`` command line (one module each, see :mod:`cp2_engine.cli`)."""
