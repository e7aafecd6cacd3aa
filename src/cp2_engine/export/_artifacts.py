"""The files of an exported package, written into a staging folder: the three weight formats
(converted from one state dict), the fp32 test tensors, the cover image and the size model."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from cp2_engine.export._cpnet_standalone import CPnet as StandaloneCPnet

__all__ = [
    "ARCHITECTURE_FILE",
    "MASKS_SCRIPT",
    "ONNX_OPSET",
    "SIZE_MODEL_FILE",
    "copy_scripts",
    "cover_image",
    "network_input",
    "scale_range",
    "standalone_net",
    "write_onnx",
    "write_size_model",
    "write_state_dict",
    "write_torchscript",
]

logger = logging.getLogger(__name__)

ARCHITECTURE_FILE = "cpnet.py"
MASKS_SCRIPT = "cp2_masks.py"
SIZE_MODEL_FILE = "cp2_size_model.json"
ONNX_OPSET = 17
_HERE = Path(__file__).resolve().parent


def copy_scripts(folder: Path) -> tuple[Path, Path]:
    """Copy the stand-alone architecture and masks scripts into ``folder``."""
    arch = folder / ARCHITECTURE_FILE
    masks = folder / MASKS_SCRIPT
    shutil.copyfile(_HERE / "_cpnet_standalone.py", arch)
    shutil.copyfile(_HERE / "_masks_standalone.py", masks)
    return arch, masks


def standalone_net(state: dict, *, nbase, nout: int, sz: int) -> torch.nn.Module:
    """The package's own architecture (``cpnet.py``) with ``state`` loaded strictly, in eval."""
    net = StandaloneCPnet(list(nbase), nout, sz)
    net.load_state_dict(state, strict=True)
    return net.eval()


def write_state_dict(state: dict, path: Path) -> Path:
    """``torch.save`` of the float32 CPU state dict (a Cellpose 2/3 model file too)."""
    torch.save({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()},
               path)  # fmt: skip
    return path


def write_torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``net`` on ``example`` and save it (the graph is shape-generic for conv nets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation and tracer notes
        traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(str(path))
    return path


def write_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export ``net`` to ONNX (opset :data:`ONNX_OPSET`) with dynamic batch, height, width."""
    dynamic = {0: "batch", 2: "y", 3: "x"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": dynamic, "output": dynamic},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return path


def write_size_model(size_model, path: Path) -> Path | None:
    """The size model as plain JSON (no pickle), or None when the model has none."""
    if size_model is None:
        return None
    record = {
        "format": "cp2-size-model/1",
        "A": np.asarray(size_model.A, np.float64).tolist(),
        "smean": np.asarray(size_model.smean, np.float64).tolist(),
        "ymean": float(size_model.ymean),
        "diam_mean": float(size_model.diam_mean),
    }
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def scale_range(x: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """BioImage.IO ``scale_range`` (1st/99th percentile per channel over y, x; linear
    quantiles) on ``(B, C, H, W)``: the preprocessing the package declares.

    Examples
    --------
    >>> x = np.arange(101, dtype=np.float32).reshape(1, 1, 1, 101)
    >>> y = scale_range(x)
    >>> round(float(y[0, 0, 0, 1]), 4), round(float(y[0, 0, 0, 99]), 4)
    (0.0, 1.0)
    """
    x = np.asarray(x, dtype=np.float32)
    lo = np.percentile(x, 1, axis=(-2, -1), keepdims=True)
    hi = np.percentile(x, 99, axis=(-2, -1), keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)


def network_input(x: np.ndarray, *, rescale: float, size: int, multiple: int) -> np.ndarray:
    """Test input ``(1, C, h, w)`` float32: ``x`` (C, H, W) resized by ``rescale`` and
    centre-cropped to at most ``size``, both sides multiples of ``multiple``."""
    from cp2_engine.inference import resize_image

    if rescale != 1.0:
        x = resize_image(x, rescale=rescale)
    h, w = (min(s, size) // multiple * multiple for s in x.shape[-2:])
    if min(h, w) < multiple:
        raise ValueError(
            f"the sample image is too small: {x.shape[-2:]} at the model's scale, need at least "
            f"{multiple} x {multiple} pixels"
        )
    y0, x0 = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return np.ascontiguousarray(x[None, :, y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def cover_image(image: np.ndarray, masks: np.ndarray, *, size: int = 384) -> np.ndarray:
    """A 2:1 RGB cover: the image (8-bit, percentile-scaled) and the same with mask outlines,
    side by side, on a centre crop of at most ``size`` pixels."""
    from cp2_engine.viz import masks_outlines, scale_to_uint8

    grey = np.asarray(image, np.float32)
    if grey.ndim == 3 and grey.shape[-1] <= 4:
        rgb = np.stack([scale_to_uint8(grey[..., c]) for c in range(min(3, grey.shape[-1]))], -1)
        rgb = rgb if rgb.shape[-1] == 3 else np.repeat(rgb[..., :1], 3, axis=-1)
    else:
        rgb = np.repeat(scale_to_uint8(grey)[..., None], 3, axis=-1)
    side = min(size, *masks.shape)
    y0, x0 = (masks.shape[0] - side) // 2, (masks.shape[1] - side) // 2
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    left = rgb[crop]
    right = left.copy()
    right[masks_outlines(masks[crop]) > 0] = (255, 64, 0)
    return np.concatenate([left, right], axis=1)
