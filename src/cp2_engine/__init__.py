"""cp2 engine: Cellpose 2.0-class cell segmentation without any GUI dependency.

Public names are re-exported lazily (``lazy_loader``) so that ``import cp2_engine`` stays cheap
(no torch import until a name that needs it is used).
"""

import lazy_loader as _lazy

try:
    from cp2_engine._version import version as __version__
except ImportError:  # pragma: no cover - only in a source tree without setuptools-scm metadata
    __version__ = "0.0.0"

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "inference": ["Model", "SegmentConfig", "Segmentation", "Segmenter"],
        "metrics": ["APResult", "average_precision"],
        "network": ["CPnet", "find_model", "list_models", "resolve_device"],
        "postprocess": ["compute_masks", "masks_to_flows"],
        "segmenters": ["load_segmenter"],
    },
)
