"""``python -m cp2_engine.cli``: the ``cp2`` command line."""

import sys

from cp2_engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
