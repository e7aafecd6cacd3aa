"""The ``cp2`` command line (``cp2 segment``, ``eval``, ``train``, ``models``, ``demo``,
``experiment``, ``zoo``); ``python -m cp2_engine.cli`` runs it too.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_main": ["main"],
    },
)
