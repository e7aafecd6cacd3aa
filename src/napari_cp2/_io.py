"""napari reader and writers for Cellpose files: ``*_seg.npy`` and ``*_masks.tif``.

All file work is done by :mod:`cp2_engine.io` (atomic writes, never overwriting an existing
annotation).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

__all__ = ["get_reader", "read_cellpose", "write_masks_tif", "write_seg_npy"]

logger = logging.getLogger(__name__)


def _kind(path) -> str | None:
    """``"seg"`` / ``"masks"`` by cp2's naming rule (:func:`cp2_engine.io.split_label_name`)."""
    from cp2_engine import io as cio

    kind_name = cio.split_label_name(path)
    if kind_name is None:
        return None
    return "seg" if kind_name[0] == "_seg" else "masks"


def get_reader(path):
    """Return :func:`read_cellpose` when ``path`` is a Cellpose ``_seg.npy``/``_masks.tif``.

    Examples
    --------
    >>> get_reader("a_seg.npy") is read_cellpose, get_reader("a.png")
    (True, None)
    """
    if isinstance(path, list | tuple):
        return read_cellpose if path and all(_kind(p) for p in path) else None
    return read_cellpose if _kind(path) else None


def _read_one(path: Path) -> list[tuple]:
    from cp2_engine import io as cio

    kind = _kind(path)
    stem = cio.split_label_name(path)[1]  # the image's name (its napari layer name)
    meta = {"name": f"{stem}_cp2_masks", "metadata": {"cp2_image": stem, "cp2_file": str(path)}}
    if kind == "masks":
        return [(np.asarray(cio.imread(path)), meta, "labels")]
    seg = cio.load_seg_npy(path)
    out = []
    image = seg.get("img") if isinstance(seg, dict) else getattr(seg, "image", None)
    masks = seg["masks"] if isinstance(seg, dict) else seg.masks
    if image is not None:
        out.append((np.asarray(image), {"name": stem}, "image"))
    out.append((np.asarray(masks), meta, "labels"))
    return out


def read_cellpose(path) -> list[tuple]:
    """Read Cellpose ``_seg.npy`` (image + masks) or ``_masks.tif`` (masks) as layer data.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> p = Path(tempfile.mkdtemp()) / "a_masks.tif"
    >>> tifffile.imwrite(p, np.ones((4, 4), np.uint16))
    >>> [(d.shape, kind) for d, _, kind in read_cellpose(str(p))]
    [((4, 4), 'labels')]
    """
    paths = path if isinstance(path, list | tuple) else [path]
    out = []
    for p in paths:
        out.extend(_read_one(Path(p)))
    return out


def write_masks_tif(path: str, data, meta: dict) -> list[str]:
    """Write a labels layer as a Cellpose ``_masks.tif`` (refuses to overwrite a file)."""
    from cp2_engine import io as cio

    target = Path(path)
    if _kind(target) != "masks":
        target = target.with_name(target.name.split(".")[0] + "_masks.tif")
    cio.save_masks(target, np.asarray(data))
    return [str(target)]


def write_seg_npy(path: str, data, meta: dict) -> list[str]:
    """Write a labels layer as a Cellpose ``_seg.npy`` (masks only; refuses to overwrite)."""
    from cp2_engine import io as cio

    target = Path(path)
    if _kind(target) != "seg":
        target = target.with_name(target.name.split(".")[0] + "_seg.npy")
    masks = np.asarray(data)
    cio.save_seg_npy(target, image=np.zeros(masks.shape, np.float32), masks=masks)
    return [str(target)]
