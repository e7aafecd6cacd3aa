"""Flows → masks: foreground, dynamics, clustering, flow-error QC, hole filling, renumbering.

``compute_masks`` turns the network's flows and cell-probability logits into a label image, with
the defaults documented in ``docs/architecture.md`` ("Flows → masks").
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit
from scipy import ndimage as ndi

from cp2_engine.postprocess._dynamics import follow_flows, get_masks
from cp2_engine.postprocess._flows import _numba_flows, consecutive_labels

logger = logging.getLogger(__name__)


def _label_dtype(n: int):
    return np.uint16 if n < 2**16 else np.uint32


def _check_inputs(dP, cellprob) -> tuple[np.ndarray, np.ndarray]:
    dP = np.asarray(dP)
    cellprob = np.asarray(cellprob)
    if dP.ndim != 3 or dP.shape[0] != 2:
        raise ValueError(f"dP must have shape (2, H, W) = (dY, dX), got {dP.shape}")
    if cellprob.shape != dP.shape[1:]:
        raise ValueError(
            f"cellprob must have shape {dP.shape[1:]} (like dP), got {cellprob.shape}"
        )
    for name, arr in (("dP", dP), ("cellprob", cellprob)):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
        if not _all_finite(arr):
            raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return np.ascontiguousarray(dP, dtype=np.float32), cellprob


def _all_finite(arr: np.ndarray) -> bool:
    """True when ``arr`` holds no NaN or inf (min and max propagate both; no temporary array)."""
    return arr.size == 0 or bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def flow_error(masks: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """Mean squared difference between each mask's own flows and the network flows ``dP / 5``.

    Parameters
    ----------
    masks : ndarray, shape (H, W)
        Integer labels, 0 = background.
    dP : ndarray, shape (2, H, W)
        Network flows (dY, dX), trained as 5x unit vectors.

    Returns
    -------
    ndarray of float64, shape (masks.max(),)
        ``errors[k - 1]`` for label ``k``: mean over the mask's pixels of the squared difference,
        summed over both axes. NaN for labels that do not occur.

    Examples
    --------
    >>> from cp2_engine.postprocess._flows import masks_to_flows
    >>> masks = np.zeros((9, 9), np.uint16); masks[1:8, 1:8] = 2
    >>> err = flow_error(masks, 5 * masks_to_flows(masks))
    >>> err.shape, bool(np.isnan(err[0])), float(err[1]) < 1e-12
    ((2,), True, True)
    """
    masks = np.asarray(masks)
    dP = np.asarray(dP)
    if masks.ndim != 2 or dP.shape != (2, *masks.shape):
        raise ValueError(f"expected masks (H, W) and dP (2, H, W), got {masks.shape}, {dP.shape}")
    top = int(masks.max()) if masks.size else 0
    errors = np.full(top, np.nan)
    lab, ids = consecutive_labels(masks)
    if len(ids):
        errors[ids - 1] = _numba_flows(lab, len(ids), np.asarray(dP, np.float32))[1]
    return errors


def remove_bad_flow_masks(
    masks: np.ndarray, dP: np.ndarray, *, threshold: float | None = 0.4
) -> np.ndarray:
    """Zero the masks whose :func:`flow_error` exceeds ``threshold`` (no renumbering).

    Parameters
    ----------
    masks : ndarray, shape (H, W)
        Integer labels.
    dP : ndarray, shape (2, H, W)
        Network flows (5x unit vectors).
    threshold : float or None
        Maximum allowed flow error; 0 or None keeps every mask.

    Returns
    -------
    ndarray
        A copy of ``masks`` with the bad masks set to 0.

    Examples
    --------
    >>> masks = np.zeros((9, 9), np.uint16); masks[1:8, 1:8] = 1
    >>> int(remove_bad_flow_masks(masks, np.zeros((2, 9, 9)), threshold=0.4).max())
    0
    """
    masks = np.array(masks, copy=True)
    if not threshold or masks.max() == 0:
        return masks
    errors = flow_error(masks, dP)
    bad = np.concatenate([[False], errors > threshold])
    masks[bad[masks]] = 0
    return masks


@njit(cache=True, nogil=True)
def _hole_owners(masks, bg_comp, n_comp):  # pragma: no cover - numba
    """Label that encloses each background component (0: none, e.g. touches two labels)."""
    h, w = masks.shape
    owner = np.zeros(n_comp + 1, np.int64)
    for y in range(h):
        for x in range(w):
            c = bg_comp[y, x]
            if c == 0 or owner[c] < 0:
                continue
            if y == 0 or x == 0 or y == h - 1 or x == w - 1:
                owner[c] = -1
                continue
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                v = np.int64(masks[yy, xx])
                if v > 0:
                    if owner[c] == 0:
                        owner[c] = v
                    elif owner[c] != v:
                        owner[c] = -1
    owner[owner < 0] = 0
    return owner


def _fill_holes(masks: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by a single mask with that mask's label."""
    bg_comp, n_comp = ndi.label(masks == 0)
    if n_comp == 0:
        return masks
    owner = _hole_owners(masks, bg_comp, n_comp)
    fill = owner[bg_comp]
    holes = fill > 0
    masks[holes] = fill[holes]
    return masks


def _remove_small(masks: np.ndarray, min_size: int) -> np.ndarray:
    counts = np.bincount(masks.ravel())
    small = counts < min_size
    small[0] = False
    if small.any():
        masks[small[masks]] = 0
    return masks


def fill_holes_and_remove_small_masks(masks: np.ndarray, *, min_size: int = 15) -> np.ndarray:
    """Fill holes in every mask, drop masks smaller than ``min_size`` and renumber 1..N.

    Parameters
    ----------
    masks : ndarray, shape (H, W)
        Integer labels, 0 = background (not modified).
    min_size : int
        Masks with fewer pixels are removed, before and after hole filling; <= 0 disables.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks)
        Consecutive labels.

    Notes
    -----
    A hole is a background region (4-connected) that does not touch the image border and whose
    neighbours all belong to one mask; it takes that mask's label. Other masks inside a hole are
    never overwritten.

    Examples
    --------
    >>> masks = np.zeros((8, 8), np.int32); masks[1:6, 1:6] = 7; masks[3, 3] = 0
    >>> masks[6:8, 6:8] = 9
    >>> out = fill_holes_and_remove_small_masks(masks, min_size=5)
    >>> int(out.max()), int(out[3, 3]), out.dtype.name
    (1, 1, 'uint16')
    """
    masks = np.asarray(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must be a 2D (H, W) label image, got shape {masks.shape}")
    lab, ids = consecutive_labels(masks)
    if len(ids) == 0:
        return np.zeros(masks.shape, np.uint16)
    if min_size > 0:
        lab = _remove_small(lab, min_size)
    lab = _fill_holes(lab)
    if min_size > 0:
        lab = _remove_small(lab, min_size)
    lab, ids = consecutive_labels(lab)
    return lab.astype(_label_dtype(len(ids)))


def compute_masks(
    dP: np.ndarray,
    cellprob: np.ndarray,
    *,
    niter: int = 200,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
) -> np.ndarray:
    """Compute a label image from network flows and cell-probability logits.

    Parameters
    ----------
    dP : ndarray, shape (2, H, W)
        Network flows (dY, dX), trained as 5x unit vectors.
    cellprob : ndarray, shape (H, W)
        Cell-probability logits.
    niter : int
        Euler steps of the dynamics.
    cellprob_threshold : float
        Foreground = ``cellprob > cellprob_threshold``.
    flow_threshold : float or None
        Maximum flow error of a kept mask; 0 or None disables the check.
    min_size : int
        Smallest mask kept, in pixels; <= 0 disables.
    max_size_fraction : float
        Masks larger than this fraction of the image are dropped.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks), shape (H, W)
        Consecutive labels, 0 = background.

    Examples
    --------
    >>> from cp2_engine.postprocess._flows import masks_to_flows
    >>> truth = np.zeros((40, 40), np.uint16); truth[5:20, 5:20] = 1; truth[20:35, 8:30] = 2
    >>> dP = 5 * masks_to_flows(truth)
    >>> cellprob = np.where(truth > 0, 5.0, -5.0)
    >>> masks = compute_masks(dP, cellprob)
    >>> int(masks.max()), bool(((masks > 0) == (truth > 0)).all())
    (2, True)
    """
    dP, cellprob = _check_inputs(dP, cellprob)
    fg = cellprob > cellprob_threshold
    if not fg.any():
        logger.info("no foreground pixels above cellprob_threshold=%s", cellprob_threshold)
        return np.zeros(cellprob.shape, np.uint16)
    field = dP * fg / np.float32(5.0)
    positions = follow_flows(field, fg, niter=niter)
    masks = get_masks(positions, fg, shape=fg.shape, max_size_fraction=max_size_fraction)
    if flow_threshold and masks.max() > 0:
        masks = remove_bad_flow_masks(masks, dP, threshold=flow_threshold)
    return fill_holes_and_remove_small_masks(masks, min_size=min_size)
