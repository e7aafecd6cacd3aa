"""Segmentation metrics: Hungarian IoU matching and AP = TP / (TP + FP + FN) at IoU thresholds;
per-ROI measurements (shape, intensity)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_ap": ["APResult", "average_precision"],
        "_matching": ["Matching", "match_masks", "unmatched_masks"],
        "_measure": ["RoiMeasurements", "measure_rois"],
        "_overlap": ["iou_matrix"],
        "_sizes": ["diameters"],
    },
)
