"""napari-cp2: the napari plugin for the cp2 engine (segment, correct, retrain, evaluate).

The public names are the manifest's targets; see ``napari.yaml``.
"""

from __future__ import annotations

__all__ = [
    "CorrectWidget",
    "Cp2Widget",
    "EvaluateWidget",
    "SegmentWidget",
    "TrainWidget",
    "get_reader",
    "write_masks_tif",
    "write_seg_npy",
]

_EXPORTS = {
    "CorrectWidget": "._correct_widget",
    "Cp2Widget": "._main_widget",
    "EvaluateWidget": "._evaluate_widget",
    "SegmentWidget": "._segment_widget",
    "TrainWidget": "._train_widget",
    "get_reader": "._io",
    "write_masks_tif": "._io",
    "write_seg_npy": "._io",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'napari_cp2' has no attribute {name!r}")
