"""Pictures: AP curves and image overlays (matplotlib), shared by the CLI, the demo and the zoo."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_plotting": ["plot_ap_curve"],
    },
)
