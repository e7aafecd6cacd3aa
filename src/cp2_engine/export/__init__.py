"""Models leave cp2: BioImage.IO model packages (``.zip``) with pytorch_state_dict, TorchScript
and ONNX weights, tested with ``bioimageio.core``, and loaded back without running their code.

Exporting needs the optional ``bioimageio.core`` (``pip install 'napari-cp2[export]'``);
loading a package back does not.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_package": [
            "ExportProgress",
            "ExportResult",
            "FormatTest",
            "export_bioimageio",
            "iter_export_bioimageio",
        ],
        "_load": ["PackageError", "is_bioimageio_package", "load_bioimageio"],
    },
)
