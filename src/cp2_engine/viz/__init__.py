"""Pictures: flow colouring, mask outlines, image overlays and AP curves, shared by io (the
``_seg.npy`` flows), the CLI, the demo, the zoo and the napari plugin.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_pictures": ["flow_to_rgb", "masks_outlines", "overlay_png", "scale_to_uint8"],
        "_plotting": ["plot_ap_curve"],
        "_cluster_figures": ["plot_ap_groups", "plot_style_map"],
        "_truth_overlay": ["overlay_rgb"],
    },
)
