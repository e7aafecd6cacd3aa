"""One click draws a missed cell: an ROI proposed from the cached flows and cell probability.

Around the click, pixels whose cell probability is above a locally lowered threshold follow the
flows (the same Euler dynamics as :func:`~cp2_engine.postprocess.compute_masks`); the ROI is the
pixels that end in the same sink as the click, joined to the click, holes filled, cropped by the
existing ROIs. A cell the model missed usually still has flows that converge on its centre and
a cell probability a little below the threshold: that is what the click recovers.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cp2_engine.postprocess._dynamics import follow_flows

__all__ = ["propose_roi"]

#: A click where the cell probability is this far below the threshold is on background.
BACKGROUND_BELOW = 6.0


def _window(point, shape, half: int) -> tuple[slice, slice]:
    y, x = point
    return (
        slice(max(0, y - half), min(shape[0], y + half + 1)),
        slice(max(0, x - half), min(shape[1], x + half + 1)),
    )


def _check(dP, cellprob, point, labels) -> tuple[np.ndarray, np.ndarray, tuple, np.ndarray]:
    dP, cellprob = np.asarray(dP), np.asarray(cellprob)
    if dP.ndim != 3 or dP.shape[0] != 2 or cellprob.shape != dP.shape[1:]:
        raise ValueError(
            f"expected dP (2, H, W) and cellprob (H, W), got {dP.shape} and {cellprob.shape}"
        )
    shape = cellprob.shape
    y, x = (round(float(v)) for v in point)
    if not (0 <= y < shape[0] and 0 <= x < shape[1]):
        raise ValueError(f"point {tuple(point)} is outside the image of shape {shape}")
    labels = np.zeros(shape, np.uint8) if labels is None else np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels shape {labels.shape} does not match cellprob {shape}")
    return dP, cellprob, (y, x), labels


def propose_roi(
    dP,
    cellprob,
    point,
    *,
    labels=None,
    diameter: float = 30.0,
    cellprob_threshold: float = 0.0,
    lowered_by: float = 1.0,
    niter: int = 200,
    sink_radius: float | None = None,
) -> np.ndarray:
    """Propose the ROI of the cell at ``point`` from flows and cell probability (one click).

    Parameters
    ----------
    dP : numpy.ndarray
        ``(2, H, W)`` network flows (dY, dX), 5 x unit vectors (``Segmentation.flows``).
    cellprob : numpy.ndarray
        ``(H, W)`` cell-probability logits (``Segmentation.cellprob``).
    point : (float, float)
        The click ``(y, x)`` in pixels.
    labels : numpy.ndarray, optional
        Existing ROIs: the proposal never takes their pixels, and a click on one proposes
        nothing (nor does a click where the cell probability is more than
        :data:`BACKGROUND_BELOW` under the threshold: background).
    diameter : float
        Cell diameter in pixels: the proposal lives in a window of 2 diameters around the click.
    cellprob_threshold : float
        The segmentation's threshold.
    lowered_by : float
        How far below ``min(cellprob_threshold, cellprob at the click)`` pixels still count as
        cell near the click.
    niter : int
        Euler steps (``Segmentation.niter``).
    sink_radius : float, optional
        Pixels whose flows end within this distance (pixels) of the click's end belong to the
        ROI (default: 0.15 diameter, at least 2).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool mask of the proposed ROI (all False when there is none).

    Raises
    ------
    ValueError
        If the shapes disagree or ``point`` is outside the image.

    Examples
    --------
    >>> from cp2_engine.postprocess import masks_to_flows
    >>> truth = np.zeros((40, 40), np.uint16); truth[5:20, 5:20] = 1; truth[20:35, 8:30] = 2
    >>> dP = 5 * masks_to_flows(truth)
    >>> cellprob = np.where(truth > 0, -1.0, -8.0)  # below the threshold: a missed cell
    >>> roi = propose_roi(dP, cellprob, (27, 19), labels=(truth == 1), diameter=15)
    >>> bool((roi == (truth == 2)).all())
    True
    """
    dP, cellprob, (y, x), labels = _check(dP, cellprob, point, labels)
    empty = np.zeros(cellprob.shape, bool)
    if labels[y, x] or cellprob[y, x] < cellprob_threshold - BACKGROUND_BELOW:
        return empty
    box = _window((y, x), cellprob.shape, max(8, round(2 * float(diameter))))
    prob, free = cellprob[box], labels[box] == 0
    cy, cx = y - box[0].start, x - box[1].start
    threshold = min(float(cellprob_threshold), float(prob[cy, cx]) - float(lowered_by))
    fg = (prob > threshold) & free
    fg[cy, cx] = True
    field = (dP[(slice(None), *box)] * fg / np.float32(5.0)).astype(np.float32)
    ends = follow_flows(field, fg, niter=niter)
    ys, xs = np.nonzero(fg)
    click = int(np.flatnonzero((ys == cy) & (xs == cx))[0])
    radius = max(2.0, 0.15 * float(diameter)) if sink_radius is None else float(sink_radius)
    near = np.hypot(ends[0] - ends[0, click], ends[1] - ends[1, click]) <= radius
    roi = np.zeros(fg.shape, bool)
    roi[ys[near], xs[near]] = True
    parts, _ = ndi.label(roi)
    roi = ndi.binary_fill_holes(parts == parts[cy, cx]) & free
    out = empty
    out[box] = roi
    return out
