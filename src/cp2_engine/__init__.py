"""cp2 engine: Cellpose 2.0-class cell segmentation without any GUI dependency.

Public names are re-exported lazily so that ``import cp2_engine`` stays cheap (no torch import
until a name that needs it is used).
"""

from __future__ import annotations

import importlib

try:
    from cp2_engine._version import version as __version__
except ImportError:  # pragma: no cover - only in a source tree without setuptools-scm metadata
    __version__ = "0.0.0"

_EXPORTS = {
    "Segmenter": "inference",
    "load_segmenter": "segmenters",
    "APResult": "metrics",
    "CPnet": "network",
    "Model": "inference",
    "SegmentConfig": "inference",
    "Segmentation": "inference",
    "average_precision": "metrics",
    "compute_masks": "postprocess",
    "find_model": "network",
    "list_models": "network",
    "masks_to_flows": "postprocess",
    "resolve_device": "network",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'cp2_engine' has no attribute {name!r}")
