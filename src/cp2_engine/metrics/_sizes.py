"""Mask sizes: equivalent-circle diameters of the masks of a label image."""

from __future__ import annotations

import numpy as np

from ._overlap import _check_labels, _renumber

__all__ = ["diameters"]


def diameters(masks) -> tuple[float, np.ndarray]:
    """Median and per-mask equivalent-circle diameters of a label image.

    The diameter of a mask of area ``A`` is ``2 * sqrt(A / pi)``; the median diameter is that
    of the median area (Cellpose's ``diam_mean`` convention). Cellpose's own ``diameters``
    returns ``sqrt(A)`` per mask; cp2 returns diameters for both.

    Parameters
    ----------
    masks : numpy.ndarray
        Integer label image, 0 = background, any label values.

    Returns
    -------
    median_diameter : float
        0.0 when there are no masks.
    per_mask : numpy.ndarray
        ``(n_masks,)`` float64 diameters in ascending label order.

    Examples
    --------
    >>> m = np.zeros((10, 10), dtype=np.uint16)
    >>> m[:2, :2] = 1
    >>> m[5:, 5:] = 7
    >>> md, d = diameters(m)
    >>> round(md, 2), d.round(2).tolist()
    (3.95, [2.26, 5.64])
    """
    labels = _renumber(_check_labels(masks, "masks"))
    per_mask = 2.0 * np.sqrt(labels.areas / np.pi)
    median = float(np.median(per_mask)) if per_mask.size else 0.0
    return median, per_mask
