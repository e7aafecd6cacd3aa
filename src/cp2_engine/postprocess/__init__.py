"""Flows <-> masks: heat-diffusion flows from labels, Euler integration of predicted flows,
clustering into masks, flow-error QC, hole filling and minimum size; the same in 3-D (no QC), and
stitching of per-plane 2-D masks into 3-D objects; one-click ROI proposals for missed cells.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_click": ["propose_roi"],
        "_dynamics": ["follow_flows", "get_masks"],
        "_flows": ["consecutive_labels", "labels_to_flows", "masks_to_flows"],
        "_masks": [
            "compute_masks",
            "fill_holes_and_remove_small_masks",
            "flow_error",
            "remove_bad_flow_masks",
        ],
        "_masks3d": ["compute_masks_3d", "fill_holes_and_remove_small_masks_3d", "stitch_planes"],
    },
)
