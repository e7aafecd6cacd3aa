"""ImageJ ROI sets: each mask as a polygon ROI in a zip (Fiji's ROI manager)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cp2_engine.io._images import _suffix
from cp2_engine.io._roi_formats import _check_masks, _mask_boxes
from cp2_engine.util import atomic_write

__all__ = ["save_imagej_rois"]


def _mask_polygons(masks: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(label, (k, 2) xy polygon)`` for each mask, from its longest contour."""
    from skimage.measure import find_contours

    for label, box in _mask_boxes(masks):
        crop = np.pad(masks[box] == label, 1).astype(np.uint8)
        contours = find_contours(crop, 0.5)
        longest = max(contours, key=len)
        y = longest[:, 0] - 1 + box[0].start
        x = longest[:, 1] - 1 + box[1].start
        yield label, np.stack([x, y], axis=1)


def save_imagej_rois(path, masks, *, overwrite: bool = False) -> Path:
    """Save each mask as an ImageJ polygon ROI in a zip (open in Fiji's ROI manager).

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.zip``, e.g. ``<name>_rois.zip``.
    masks : numpy.ndarray
        ``(H, W)`` integer label image.
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.zip`` or ``masks`` is not 2D.

    Examples
    --------
    >>> import tempfile, pathlib, roifile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a_rois.zip"
    >>> m = np.zeros((9, 9), np.uint16)
    >>> m[1:4, 1:4], m[5:8, 5:8] = 1, 2
    >>> len(roifile.roiread(save_imagej_rois(p, m)))
    2
    """
    import roifile

    path = Path(path)
    if _suffix(path) != ".zip":
        raise ValueError(f"ImageJ ROI sets are .zip files, got {path.name!r}")
    masks = _check_masks(masks)
    rois = []
    for label, xy in _mask_polygons(masks):
        roi = roifile.ImagejRoi.frompoints(xy)
        roi.name = f"{label:05d}"
        rois.append(roi)
    if not rois:
        raise ValueError("masks hold no labels: nothing to write as ROIs")
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.unlink()  # roifile appends to an existing zip
        roifile.roiwrite(tmp, rois)
    return path
