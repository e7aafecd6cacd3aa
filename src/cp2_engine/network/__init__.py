"""The Cellpose network: the residual U-net (CPnet), model files (strict load, atomic save),
the registry that finds bundled, user and Cellpose-cache models by name (no downloads), and the
runtime that runs it (one precision policy, torch or OpenVINO backends).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_device": [
            "PRECISIONS",
            "autocast_for",
            "cpu_has_native_bf16",
            "resolve_device",
            "resolve_precision",
            "use_channels_last",
        ],
        "_net": ["CPnet"],
        "_runtime": [
            "BACKENDS",
            "NetRunner",
            "get_runner",
            "openvino_available",
            "resolve_backend",
        ],
        "_registry": [
            "ModelNotFoundError",
            "ModelSpec",
            "bundled_dir",
            "find_model",
            "list_models",
            "search_dirs",
        ],
        "_weights": [
            "ModelFileError",
            "build_net_from_state",
            "infer_architecture",
            "load_state_dict",
            "read_metadata",
            "save_model",
            "sha256_file",
            "verify_sha256",
        ],
    },
)
