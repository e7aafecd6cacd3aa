"""Names that moved out of io, still importable from ``cp2_engine.io`` for users.

Atomic writes live in :mod:`cp2_engine.util`, pictures (flow colouring, outlines, overlays) in
:mod:`cp2_engine.viz`; new code imports them from there.
"""

from cp2_engine.util import atomic_write, atomic_write_file, give_default_permissions
from cp2_engine.viz import flow_to_rgb, masks_outlines, overlay_png

__all__ = [
    "atomic_write",
    "atomic_write_file",
    "flow_to_rgb",
    "give_default_permissions",
    "masks_outlines",
    "overlay_png",
]
