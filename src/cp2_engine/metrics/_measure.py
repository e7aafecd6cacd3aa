"""Per-ROI measurements of a label image: shape and intensity, vectorised over all ROIs.

The values equal those of :func:`skimage.measure.regionprops` (``area``, ``centroid``,
``equivalent_diameter_area``, ``perimeter`` with 4-connectivity, ``eccentricity``, ``solidity``,
``intensity_mean``) but are computed for every ROI at once with ``numpy.bincount`` (the convex
hulls of ``solidity`` are the only per-ROI loop, on border pixels only): a 2048 x 2048 image with
2,000 ROIs takes well under a second where ``regionprops_table`` takes several.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import sqrt

import numpy as np

__all__ = ["RoiMeasurements", "measure_rois"]

#: skimage's perimeter weights, indexed by the 3x3 code of a border pixel (see ``_perimeter``).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + sqrt(2)) / 2


@dataclass(frozen=True, eq=False)
class RoiMeasurements:
    """Per-ROI measurements, one row per ROI in ascending label order.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Column name -> 1-D array, all of length ``n_rois``, in display order: ``label``,
        ``centroid_y``, ``centroid_x``, ``area_px``, ``equivalent_diameter_px``,
        ``perimeter_px``, ``eccentricity``, ``solidity``, then (with a scale) ``area_<unit>2``,
        ``equivalent_diameter_<unit>``, ``perimeter_<unit>`` (isotropic pixels only), then
        ``mean_<channel>`` and ``integrated_<channel>`` per image channel.
    """

    columns: dict

    @property
    def n_rois(self) -> int:
        """Number of ROIs (rows)."""
        return len(self.columns["label"])


def _areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(flat label index per pixel, present labels, number of bins)."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top > 4 * flat.size + 1024:  # sparse huge ids: compact them first
        ids, inverse = np.unique(flat, return_inverse=True)
        if ids[0] != 0:
            ids, inverse = np.concatenate([[0], ids]), inverse + 1
        return inverse.astype(np.int64), ids[1:], len(ids)
    return flat.astype(np.intp, copy=False), None, top + 1


def _border(labels: np.ndarray) -> np.ndarray:
    """Pixels of a ROI with a 4-neighbour outside the ROI (or outside the image)."""
    pad = np.pad(labels, 1)
    core = pad[1:-1, 1:-1]
    inner = (
        (pad[:-2, 1:-1] == core)
        & (pad[2:, 1:-1] == core)
        & (pad[1:-1, :-2] == core)
        & (pad[1:-1, 2:] == core)
    )
    return (labels != 0) & ~inner


def _perimeter(labels: np.ndarray, border: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
    """skimage's 4-connectivity perimeter of every ROI (``bins``: ROI bin of each border pixel)."""
    ys, xs = np.nonzero(border)
    lab = labels[ys, xs]
    pad_l = np.pad(labels, 1)
    pad_b = np.pad(border, 1)
    code = np.ones(len(ys), np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            weight = 10 if dy and dx else 2
            yy, xx = ys + 1 + dy, xs + 1 + dx
            code += weight * (pad_b[yy, xx] & (pad_l[yy, xx] == lab))
    return np.bincount(bins, weights=_PERIMETER_WEIGHTS[code], minlength=n)


def _cyclic_next(owner: np.ndarray) -> np.ndarray:
    """Index of the next vertex of the same polygon (vertices grouped by ``owner``)."""
    nxt = np.arange(1, len(owner) + 1)
    last = np.r_[owner[1:] != owner[:-1], True]
    nxt[last] = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return nxt


def _chains(ys, xs, bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ROI's outline through the leftmost and rightmost pixel diamond corners of each row.

    Returns (y, x, owner): a y-monotone polygon per ROI (left side downwards, right side
    upwards), whose convex hull is the hull of the ROI's pixels grown by skimage's diamond.
    """
    key = bins.astype(np.int64) * (int(ys.max()) + 2) + ys
    order = np.argsort(key, kind="stable")
    key, xs_sorted = key[order], xs[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    roi, row = bins[order][starts].astype(np.int64), ys[order][starts].astype(np.int64)
    left = np.minimum.reduceat(xs_sorted, starts)
    right = np.maximum.reduceat(xs_sorted, starts)
    # diamond corners of the row extremes, on levels 2y - 1, 2y, 2y + 1 (y in half pixels)
    level = np.concatenate([2 * row - 1, 2 * row, 2 * row + 1])
    roi3 = np.tile(roi, 3)
    lx = np.concatenate([left, left - 0.5, left])
    rx = np.concatenate([right, right + 0.5, right])
    span = int(level.max()) + 3
    out = []
    for xs_side, sign, pick in ((lx, 1, np.minimum), (rx, -1, np.maximum)):
        pos = (0 if sign > 0 else span) + (level + 1 if sign > 0 else span - level)
        k = roi3 * (2 * span + 2) + pos
        o = np.argsort(k, kind="stable")
        k, x_side = k[o], xs_side[o]
        first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        out.append((k[first], pick.reduceat(x_side, first), level[o][first]))
    k = np.concatenate([out[0][0], out[1][0]])
    order = np.argsort(k, kind="stable")
    x = np.concatenate([out[0][1], out[1][1]])[order]
    y = np.concatenate([out[0][2], out[1][2]])[order] / 2.0
    return y, x, k[order] // (2 * span + 2)


def _hull_vertices(ys, xs, bins) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull polygons of every ROI (pixels grown by skimage's diamond), all at once.

    Starts from each ROI's y-monotone outline (:func:`_chains`) and removes every vertex that
    does not turn convexly (reflex, collinear or repeated) until none is left.

    Returns the ``(V, 2)`` (y, x) vertices, grouped by ROI, and each vertex's ROI bin.
    """
    y, x, owner = _chains(ys, xs, bins)
    while True:
        nxt = _cyclic_next(owner)
        same = (y == y[nxt]) & (x == x[nxt])
        if same.any():
            y, x, owner = y[~same], x[~same], owner[~same]
            continue
        prv = np.empty_like(nxt)
        prv[nxt] = np.arange(len(nxt))
        cross = (y - y[prv]) * (x[nxt] - x) - (x - x[prv]) * (y[nxt] - y)
        keep = cross > 1e-12
        if keep.all():
            return np.stack([y, x], axis=1), owner
        y, x, owner = y[keep], x[keep], owner[keep]


def _convex_areas(ys, xs, bins, n: int) -> np.ndarray:
    """Pixel count of each ROI's convex hull, as skimage's ``area_convex`` counts it.

    The pixel centres inside the hull or on its edges: per row, the span between the leftmost
    and rightmost crossing of the hull's edges, counted for all ROIs at once.
    """
    if len(ys) == 0:
        return np.zeros(n)
    verts, owner = _hull_vertices(ys, xs, bins)
    nxt = _cyclic_next(owner)
    (y1, x1), (y2, x2) = verts.T, verts[nxt].T
    eps = 1e-9
    lo = np.ceil(np.minimum(y1, y2) - eps).astype(np.int64)
    hi = np.floor(np.maximum(y1, y2) + eps).astype(np.int64)
    count = np.where(y1 != y2, np.maximum(hi - lo + 1, 0), 0)
    edge = np.repeat(np.arange(len(verts)), count)
    rows = lo[edge] + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    t = (rows - y1[edge]) / (y2[edge] - y1[edge])
    xs_cross = x1[edge] + t * (x2[edge] - x1[edge])
    on_row = np.abs(y1 - np.round(y1)) < eps  # vertices lying on a pixel row
    keys_roi = np.concatenate([owner[edge], owner[on_row]])
    keys_row = np.concatenate([rows, np.round(y1[on_row]).astype(np.int64)])
    xs_all = np.concatenate([xs_cross, x1[on_row]])
    key = keys_roi * (int(keys_row.max()) + 2) + keys_row + 1
    order = np.argsort(key, kind="stable")
    key, xs_all, keys_roi = key[order], xs_all[order], keys_roi[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    left = np.minimum.reduceat(xs_all, starts)
    right = np.maximum.reduceat(xs_all, starts)
    span = np.maximum(np.floor(right + eps) - np.ceil(left - eps) + 1, 0)
    return np.bincount(keys_roi[starts], weights=span, minlength=n)


def _channels(image, shape, channel_axis) -> np.ndarray:
    """The image as ``(C, H, W)`` float64."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    elif image.ndim == 3:
        axis = image.ndim - 1 if channel_axis is None else int(channel_axis) % 3
        image = np.moveaxis(image, axis, 0)
    else:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[1:] != tuple(shape):
        raise ValueError(
            f"image shape {image.shape[1:]} (without channels) does not match labels {shape}"
        )
    if not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"image must be numeric, got dtype {image.dtype}")
    return image


def _moments(bins, idx, w: int, n: int, present) -> tuple[np.ndarray, ...]:
    """Area, centroid and eccentricity of each ROI from its pixels' flat indices ``idx``."""
    a = np.bincount(bins, minlength=n)[present].astype(np.float64)
    yy, xx = np.divmod(idx, w)
    cyf, cxf = np.zeros(n), np.zeros(n)
    cyf[present] = np.bincount(bins, weights=yy, minlength=n)[present] / a
    cxf[present] = np.bincount(bins, weights=xx, minlength=n)[present] / a
    dy = yy - cyf[bins]  # central moments, shifted by the centroid for precision
    dx = xx - cxf[bins]
    syy = np.bincount(bins, weights=dy * dy, minlength=n)[present] / a
    sxx = np.bincount(bins, weights=dx * dx, minlength=n)[present] / a
    sxy = np.bincount(bins, weights=dy * dx, minlength=n)[present] / a
    half_sum, root = (syy + sxx) / 2, np.sqrt(((syy - sxx) / 2) ** 2 + sxy**2)
    l1, l2 = half_sum + root, np.maximum(half_sum - root, 0.0)
    ecc = np.where(l1 > 0, np.sqrt(1 - l2 / np.where(l1 > 0, l1, 1.0)), 0.0)
    return a, cyf[present], cxf[present], ecc


def _shape_columns(labels: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, int]:
    """The shape columns, and (ROI bin and flat index of each ROI pixel, present bins, bins)."""
    flat, ids, n = _areas(labels)
    idx = np.flatnonzero(flat)
    bins = flat[idx]
    present = np.flatnonzero(np.bincount(bins, minlength=n)[1:]) + 1
    a, cy, cx, ecc = _moments(bins, idx, labels.shape[1], n, present)
    border = _border(labels)
    border_bins = flat.reshape(labels.shape)[border]
    perimeter = _perimeter(labels, border, border_bins, n)[present]
    bys, bxs = np.nonzero(border)
    convex = _convex_areas(bys, bxs, border_bins, n)[present]
    label_values = present if ids is None else ids[present - 1]
    columns = {
        "label": label_values.astype(np.int64),
        "centroid_y": cy,
        "centroid_x": cx,
        "area_px": a.astype(np.int64),
        "equivalent_diameter_px": np.sqrt(4 * a / np.pi),
        "perimeter_px": perimeter,
        "eccentricity": ecc,
        "solidity": a / convex,
    }
    return columns, bins, idx, present, n


def measure_rois(
    labels,
    image=None,
    *,
    channel_axis: int | None = None,
    channel_names=None,
    scale: tuple[float, float] | None = None,
    unit: str = "um",
) -> RoiMeasurements:
    """Measure every ROI of a 2-D label image: shape, and intensity in every image channel.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer labels, 0 = background (any label values).
    image : numpy.ndarray, optional
        ``(H, W)`` or ``(H, W, C)`` intensities for ``mean_*`` and ``integrated_*`` columns.
    channel_axis : int, optional
        Axis of the channels of a 3-D ``image`` (default: the last).
    channel_names : sequence of str, optional
        Column suffixes per channel (default ``c0``, ``c1``, ...; ``intensity`` for a 2-D image).
    scale : (float, float), optional
        Pixel size ``(y, x)`` in ``unit``; adds the scaled area, diameter and (square pixels
        only) perimeter columns.
    unit : str
        Unit of ``scale`` used in the column names (default ``um``).

    Returns
    -------
    RoiMeasurements
        One row per ROI (see :class:`RoiMeasurements` for the columns).

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, the image does not match it, or the scale is not positive.
    TypeError
        If ``labels`` is not integer.

    Examples
    --------
    >>> lab = np.zeros((8, 8), np.uint16); lab[1:4, 1:4] = 3; lab[5:7, 2:8] = 9
    >>> m = measure_rois(lab, np.full((8, 8), 2.0), scale=(0.5, 0.5))
    >>> m.columns["label"].tolist(), m.columns["area_px"].tolist(), m.columns["area_um2"].tolist()
    ([3, 9], [9, 12], [2.25, 3.0])
    >>> m.columns["integrated_intensity"].tolist(), float(m.columns["solidity"][0])
    ([18.0, 24.0], 1.0)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise TypeError(f"labels must be integer, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    columns, bins, idx, present, n = _shape_columns(labels)
    if scale is not None:
        sy, sx = (float(s) for s in scale)
        if not (sy > 0 and sx > 0):
            raise ValueError(f"scale must be two positive pixel sizes (y, x), got {scale}")
        area = columns["area_px"] * sy * sx
        columns[f"area_{unit}2"] = area
        columns[f"equivalent_diameter_{unit}"] = np.sqrt(4 * area / np.pi)
        if np.isclose(sy, sx):
            columns[f"perimeter_{unit}"] = columns["perimeter_px"] * sy
    if image is not None:
        chans = _channels(image, labels.shape, channel_axis)
        names = channel_names
        if names is None:
            two_d = np.asarray(image).ndim == 2
            names = ["intensity"] if two_d else [f"c{i}" for i in range(len(chans))]
        if len(names) != len(chans):
            raise ValueError(f"channel_names has {len(names)} names for {len(chans)} channels")
        for name, chan in zip(names, chans):
            values = chan.ravel()[idx].astype(np.float64)
            total = np.bincount(bins, weights=values, minlength=n)
            columns[f"mean_{name}"] = total[present] / columns["area_px"]
            columns[f"integrated_{name}"] = total[present]
    return RoiMeasurements(columns=columns)
