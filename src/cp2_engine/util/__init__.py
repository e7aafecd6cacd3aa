"""Small helpers shared by every layer (draining progress generators)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_progress": ["drain"],
    },
)
