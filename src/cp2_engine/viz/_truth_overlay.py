"""Truth-versus-prediction overlay: a grey image with both sets of mask outlines drawn on it.

Self-contained (numpy and scikit-image only), so every package may draw it: viz sits on the
lowest layer and imports no other cp2 package.
"""

from __future__ import annotations

import numpy as np

__all__ = ["overlay_rgb"]

#: Percentile range below which an image counts as constant (drawn black), as in Cellpose.
_MIN_RANGE = 1e-3
#: Axes shorter than this may be a channel axis (as in ``cp2_engine.inference.convert_image``).
_MAX_CHANNELS = 10


def _grey(image, *, clip: bool = True) -> np.ndarray:
    """``(H, W)`` float32: channel mean, 1st/99th percentiles mapped to 0 and 1 (then clipped).

    The same grey channel as ``cp2_engine.inference.convert_image(image, normalize=True)[0]``.
    """
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"image must be numeric, got dtype {arr.dtype}")
    arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    if arr.ndim == 3 and min(arr.shape) < _MAX_CHANNELS:
        arr = arr.mean(axis=int(np.argmin(arr.shape)), dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"expected a 2-D image (H, W) or (H, W, C) / (C, H, W) with C < {_MAX_CHANNELS}, "
            f"got shape {np.shape(image)}"
        )
    x = arr.astype(np.float32)
    lo, hi = np.percentile(x, [1, 99])
    if hi - lo <= _MIN_RANGE:
        return np.zeros_like(x)
    x = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(x, 0, 1) if clip else x


def overlay_rgb(image, labels_true, labels_pred=None) -> np.ndarray:
    """Grey image (1-99% scaled) with true outlines in green and predicted ones in magenta.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey image, or ``(H, W, C)`` / ``(C, H, W)`` with ``C < 10`` channels
        (averaged). A constant image is drawn black.
    labels_true : numpy.ndarray
        ``(H, W)`` integer labels, 0 = background; inner outlines drawn in green.
    labels_pred : numpy.ndarray, optional
        ``(H, W)`` integer labels; outer outlines drawn in magenta (over the green).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB (grey values at most 200, so outlines stand out).

    Raises
    ------
    ValueError
        If the image is not 2-D (with an optional channel axis) or a label image has another
        ``(H, W)``.
    TypeError
        If the image is not numeric.

    Examples
    --------
    >>> lab = np.zeros((20, 20), np.uint16); lab[5:12, 5:12] = 1
    >>> overlay_rgb(np.random.default_rng(0).random((20, 20)), lab).shape
    (20, 20, 3)
    """
    from skimage.segmentation import find_boundaries

    grey = _grey(image)
    for name, labels in (("labels_true", labels_true), ("labels_pred", labels_pred)):
        if labels is not None and np.shape(labels) != grey.shape:
            raise ValueError(
                f"{name} must have the image's shape {grey.shape}, got {np.shape(labels)}"
            )
    rgb = (np.repeat(grey[..., None], 3, axis=-1) * 200).astype(np.uint8)
    rgb[find_boundaries(labels_true, mode="inner")] = (0, 255, 0)
    if labels_pred is not None:
        rgb[find_boundaries(labels_pred, mode="outer")] = (255, 0, 255)
    return rgb
