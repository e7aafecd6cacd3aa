"""napari-cp2: the napari plugin for the cp2 engine (segment, correct, retrain, evaluate).

The public names are the manifest's widgets, reader and writers (see ``napari.yaml``), loaded
lazily (``lazy_loader``) so that ``import napari_cp2`` does not import Qt or napari.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_batch_widget": ["BatchWidget"],
        "_correct_widget": ["CorrectWidget"],
        "_evaluate_widget": ["EvaluateWidget"],
        "_io": ["get_reader", "write_masks_tif", "write_seg_npy"],
        "_main_widget": ["Cp2Widget"],
        "_measure_widget": ["MeasureWidget"],
        "_segment_widget": ["SegmentWidget"],
        "_train_widget": ["TrainWidget"],
    },
)
