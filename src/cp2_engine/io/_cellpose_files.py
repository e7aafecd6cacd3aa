"""Cellpose files: ``_masks.tif``/``_cp_masks.png`` label images and the GUI's ``_seg.npy``.

Writers of annotations refuse to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cp2_engine.io._images import _suffix, imread, imwrite
from cp2_engine.util import atomic_write, load_npy_restricted
from cp2_engine.viz import flow_to_rgb, masks_outlines, scale_to_uint8

logger = logging.getLogger(__name__)

__all__ = ["load_seg_npy", "read_labels", "save_masks", "save_seg_npy"]


def _label_dtype(masks: np.ndarray, name: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if not np.issubdtype(masks.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, got dtype {masks.dtype}")
    if masks.size and masks.min() < 0:
        raise ValueError(f"{name} has negative labels; expected 0 = background, 1..N = masks")
    top = int(masks.max()) if masks.size else 0
    if top > np.iinfo(np.uint32).max:
        raise ValueError(f"{name} has labels above 2**32 - 1 ({top}); renumber them first")
    return masks.astype(np.uint16 if top <= 65535 else np.uint32, copy=False)


def save_masks(path, masks, *, overwrite: bool = False) -> Path:
    """Save a label image as ``.tif``/``.tiff`` (zlib) or ``.png``, refusing to overwrite.

    Labels are stored as uint16, or uint32 when a label exceeds 65535 (tif only).

    Parameters
    ----------
    path : str or os.PathLike
        Destination, typically ``<name>_masks.tif`` or ``<name>_cp_masks.png``.
    masks : numpy.ndarray
        Integer label image, 0 = background.
    overwrite : bool, optional
        Replace an existing file. Default False: annotations are never silently replaced.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ValueError
        For negative labels, labels above 65535 in a png, or an extension other than
        tif/tiff/png.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "cells_masks.tif"
    >>> _ = save_masks(p, np.array([[0, 1], [2, 2]]))
    >>> imread(p).dtype
    dtype('uint16')
    """
    path = Path(path)
    ext = _suffix(path)
    if ext not in (".tif", ".tiff", ".png"):
        raise ValueError(f"masks are saved as .tif, .tiff or .png, got {path.name!r}")
    masks = _label_dtype(masks)
    if ext == ".png" and masks.dtype == np.uint32:
        raise ValueError(f"{path.name}: more than 65535 labels do not fit a png; use .tif")
    imwrite(path, masks, overwrite=overwrite)
    return path


def read_labels(path) -> np.ndarray:
    """Read a label image from a masks file (tif/png/npy/zarr) or a ``_seg.npy``.

    Parameters
    ----------
    path : str or os.PathLike
        ``<name>_masks.tif``, ``<name>_cp_masks.png``, ``<name>_seg.npy``, ...

    Returns
    -------
    numpy.ndarray
        Integer label image (2D labels saved with a singleton axis are squeezed).

    Raises
    ------
    TypeError
        If the file holds a non-integer array.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a_masks.png"
    >>> _ = save_masks(p, np.array([[0, 3]]))
    >>> read_labels(p).tolist()
    [[0, 3]]
    """
    path = Path(path)
    if path.name.endswith("_seg.npy"):
        labels = np.asarray(load_seg_npy(path)["masks"])
    else:
        labels = np.asarray(imread(path))
    if labels.ndim > 2:
        labels = labels.squeeze()
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{path} does not hold integer labels (dtype {labels.dtype})")
    return labels


def _seg_flows(flows, cellprob, shape) -> list:
    if flows is None and cellprob is None:
        return [[], [], [], [], [[]]]  # the Cellpose GUI's "no flows" value
    if flows is None or cellprob is None:
        raise ValueError("pass both flows and cellprob, or neither")
    dP = np.asarray(flows, dtype=np.float32)
    prob = np.asarray(cellprob, dtype=np.float32)
    # 2-D: (dY, dX); stack: (dZ, dY, dX) from 3-D runs or (dY, dX) per plane from stitched runs
    n_flow = (2,) if len(shape) == 2 else (3, 2)
    if dP.ndim != len(shape) + 1 or dP.shape[0] not in n_flow or dP.shape[1:] != tuple(shape):
        raise ValueError(
            f"expected flows ({' or '.join(map(str, n_flow))}, {', '.join(map(str, shape))}) "
            f"and cellprob {tuple(shape)}, got {dP.shape} and {prob.shape}"
        )
    if prob.shape != tuple(shape):
        raise ValueError(f"expected cellprob {tuple(shape)}, got {prob.shape}")
    if len(shape) == 2:
        rgb = flow_to_rgb(dP)[np.newaxis]
        return [
            rgb,
            scale_to_uint8(prob)[np.newaxis],
            np.zeros_like(rgb),
            np.zeros((2, *shape), dtype=np.float32),
            np.concatenate([dP, prob[np.newaxis]], axis=0),
        ]
    # stacks, as Cellpose writes them: per-plane RGB of (dY, dX), the scaled cell probability,
    # the first flow component as uint8 centred on 127, final positions, flows + cellprob
    rgb = np.stack([flow_to_rgb(dP[-2:, z]) for z in range(shape[0])])
    return [
        rgb,
        scale_to_uint8(prob),
        np.clip(dP[0] / 10 * 127 + 127, 0, 255).astype(np.uint8),
        np.zeros(dP.shape, dtype=np.float32),
        np.concatenate([dP, prob[np.newaxis]], axis=0),
    ]


def _consecutive(masks: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    ids = np.unique(masks)
    n = len(ids) - (1 if ids.size and ids[0] == 0 else 0)
    if masks.size and int(masks.max()) != n:
        logger.info("renumbering masks to 1..%d for the Cellpose GUI", n)
        masks = relabel_sequential(masks)[0]
    return _label_dtype(masks)


def _image_matches(image: tuple, masks: tuple) -> bool:
    """Masks (Y, X) or (Z, Y, X) fit images with channels first or last (and (Z, C, Y, X))."""
    nd = len(masks)
    if image[:nd] == masks or image[-nd:] == masks:
        return True
    return nd == 3 and len(image) == 4 and (image[0], *image[2:]) == masks


def _outlines(masks: np.ndarray) -> np.ndarray:
    """Outlines as Cellpose draws them: per plane for a z-stack."""
    if masks.ndim == 3:
        return np.stack([masks_outlines(plane) for plane in masks])
    return masks_outlines(masks)


def _seg_path(path: Path) -> tuple[Path, str]:
    """(output ``_seg.npy`` path, image file name) for an image or ``_seg.npy`` path."""
    if path.name.endswith("_seg.npy"):
        return path, str(path)[: -len("_seg.npy")]
    return path.with_name(path.stem + "_seg.npy"), str(path)


def save_seg_npy(
    path,
    *,
    image,
    masks,
    flows=None,
    cellprob=None,
    diameter: float | None = None,
    channels: Sequence[int] = (0, 0),
    model_path=None,
    flow_threshold: float = 0.4,
    cellprob_threshold: float = 0.0,
    ismanual=None,
    overwrite: bool = False,
) -> Path:
    """Write a Cellpose-GUI-compatible ``_seg.npy`` (a pickled dict saved with ``np.save``).

    Parameters
    ----------
    path : str or os.PathLike
        The image path (``cells.tif`` writes ``cells_seg.npy`` beside it) or the
        ``_seg.npy`` path itself.
    image : numpy.ndarray
        The image the masks belong to (stored as ``img``).
    masks : numpy.ndarray
        ``(H, W)`` integer labels; renumbered to 1..N if they have gaps (the GUI assumes it).
    flows, cellprob : numpy.ndarray, optional
        Network flows ``(2, H, W)`` (dY, dX) and cell-probability logits ``(H, W)``; both or
        neither. They let the GUI re-threshold without running the network.
    diameter : float, optional
        Diameter used for segmentation; default the median mask diameter.
    channels : sequence of int, optional
        Cellpose ``[chan, chan2]``, stored as ``chan_choose``.
    model_path : str or os.PathLike, optional
        Model used, stored as a string (``""`` when None).
    flow_threshold, cellprob_threshold : float, optional
        Thresholds used, stored for the GUI.
    ismanual : array_like of bool, optional
        One flag per mask (after renumbering): True for hand-drawn masks. Default all False.
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written ``_seg.npy`` path.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is False.
    ValueError
        For mismatched shapes or a wrong ``ismanual`` length.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> m = np.zeros((8, 8), np.uint16)
    >>> m[2:5, 2:5] = 1
    >>> out = save_seg_npy(folder / "cells.tif", image=np.zeros((8, 8)), masks=m)
    >>> out.name, sorted(load_seg_npy(out))[:3]
    ('cells_seg.npy', ['cellprob_threshold', 'chan_choose', 'colors'])
    """
    from cp2_engine.metrics import diameters

    out, filename = _seg_path(Path(path))
    masks = _consecutive(np.asarray(masks))
    if masks.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or a z-stack (Z, H, W), got shape {masks.shape}")
    image = np.asarray(image)
    if not _image_matches(image.shape, masks.shape):
        raise ValueError(f"image shape {image.shape} does not match masks {masks.shape}")
    n = int(masks.max()) if masks.size else 0
    manual = np.zeros(n, dtype=bool) if ismanual is None else np.asarray(ismanual, dtype=bool)
    if manual.shape != (n,):
        raise ValueError(f"ismanual must hold one flag per mask ({n}), got {manual.shape}")
    est_diam = diameters(masks)[0]
    dat = {
        "outlines": _outlines(masks),
        "colors": np.random.default_rng(n).integers(64, 256, size=(n, 3), dtype=np.uint8),
        "masks": masks,
        "chan_choose": [int(c) for c in channels],
        "filename": filename,
        "flows": _seg_flows(flows, cellprob, masks.shape),
        "ismanual": manual,
        "manual_changes": [],
        "model_path": "" if model_path is None else str(model_path),
        "flow_threshold": float(flow_threshold),
        "cellprob_threshold": float(cellprob_threshold),
        "diameter": float(est_diam if diameter is None else diameter),
        "est_diam": float(est_diam),
        "img": image,
    }
    with atomic_write(out, overwrite=overwrite) as tmp:
        np.save(tmp, dat, allow_pickle=True)
    return out


def load_seg_npy(path) -> dict:
    """Read a ``_seg.npy`` written by cp2 or the Cellpose GUI/CLI.

    ``_seg.npy`` files are Python pickles; they are read with a restricted unpickler
    (:func:`cp2_engine.util.load_npy_restricted`) that allows only containers, strings,
    numbers and numpy arrays, so opening a file cannot run code.

    Parameters
    ----------
    path : str or os.PathLike
        The ``_seg.npy`` file.

    Returns
    -------
    dict
        The stored keys (at least ``masks``).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If the file does not hold a dict with a ``masks`` entry, or is unreadable.
    cp2_engine.util.UnsafeFileError
        (a ValueError) If the file asks to load anything else (it could run code).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x_seg.npy"
    >>> np.save(p, {"masks": np.ones((2, 2), np.uint16)})
    >>> load_seg_npy(p)["masks"].sum()
    np.uint64(4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such _seg.npy file: {path}")
    obj = load_npy_restricted(path, what="_seg.npy file")
    dat = obj.item() if obj.dtype == object and obj.shape == () else None
    if not isinstance(dat, dict) or "masks" not in dat:
        raise ValueError(f"{path} is not a Cellpose _seg.npy (expected a dict with 'masks')")
    return dat
