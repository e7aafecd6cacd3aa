"""3-D masks: flows → masks for a volume, hole filling and minimum size in 3-D, and stitching of
per-plane 2-D masks into 3-D objects.

``compute_masks_3d`` is the 2-D pipeline of ``docs/architecture.md`` on a volume, without the
flow-error QC (as in Cellpose 3.1: the QC is 2-D only). ``stitch_planes`` is Cellpose's
``stitch3D``: each mask of a plane takes the label of the previous plane's mask it overlaps best
when that IoU reaches the threshold (and that previous mask has no better partner), else a new
label.
"""

from __future__ import annotations

import logging

import numpy as np
from numba import njit
from scipy import ndimage as ndi

from cp2_engine.postprocess._dynamics import _label_dtype
from cp2_engine.postprocess._dynamics3d import follow_masked_flows_3d, get_masks_3d
from cp2_engine.postprocess._flows import consecutive_labels
from cp2_engine.postprocess._masks import _all_finite

logger = logging.getLogger(__name__)


@njit(cache=True, nogil=True)
def _hole_owners3d(masks, bg_comp, n_comp):  # pragma: no cover - numba
    """Label that encloses each background component (0: none, e.g. touches two labels)."""
    d, h, w = masks.shape
    owner = np.zeros(n_comp + 1, np.int64)
    for z in range(d):
        for y in range(h):
            for x in range(w):
                c = bg_comp[z, y, x]
                if c == 0 or owner[c] < 0:
                    continue
                if z == 0 or y == 0 or x == 0 or z == d - 1 or y == h - 1 or x == w - 1:
                    owner[c] = -1
                    continue
                for dz, dy, dx in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1),
                                   (0, 0, 1)):  # fmt: skip
                    v = np.int64(masks[z + dz, y + dy, x + dx])
                    if v > 0:
                        if owner[c] == 0:
                            owner[c] = v
                        elif owner[c] != v:
                            owner[c] = -1
    owner[owner < 0] = 0
    return owner


def fill_holes_and_remove_small_masks_3d(masks: np.ndarray, *, min_size: int = 15) -> np.ndarray:
    """Fill 3-D holes in every mask, drop masks smaller than ``min_size`` voxels, renumber 1..N.

    Parameters
    ----------
    masks : ndarray, shape (Z, Y, X)
        Integer labels, 0 = background (not modified).
    min_size : int
        Masks with fewer voxels are removed (before hole filling, which only grows masks);
        <= 0 disables.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks)
        Consecutive labels.

    Notes
    -----
    A hole is a background region (6-connected) that does not touch the volume's border and whose
    face neighbours all belong to one mask; it takes that mask's label. As in Cellpose 3.1
    (``fill_voids``) only holes closed in 3-D are filled; other masks are never overwritten.

    Examples
    --------
    >>> masks = np.zeros((7, 7, 7), np.int32); masks[1:6, 1:6, 1:6] = 5; masks[3, 3, 3] = 0
    >>> out = fill_holes_and_remove_small_masks_3d(masks, min_size=10)
    >>> int(out.max()), int(out[3, 3, 3]), out.dtype.name
    (1, 1, 'uint16')
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a 3-D (Z, Y, X) label volume, got shape {masks.shape}")
    lab, n = _relabel_by_size(masks, min_size)
    if n == 0:
        return np.zeros(masks.shape, np.uint16)
    for box in ndi.find_objects(lab, max_label=n):
        if box is not None:
            _fill_holes_in_box(lab, box)
    return lab.astype(_label_dtype(n), copy=False)


def _fill_holes_in_box(lab: np.ndarray, box: tuple) -> None:
    """Fill the holes that lie in one mask's bounding box grown by one voxel, in place.

    A hole of mask ``i`` is inside ``i``'s box, and a background component of the grown box
    that does not touch the box's faces is a whole component of the volume, so looking only
    there (a few percent of a crowded volume) finds the same holes as labelling everything.
    """
    box = tuple(
        slice(max(0, s.start - 1), min(size, s.stop + 1)) for s, size in zip(box, lab.shape)
    )
    sub = lab[box]
    comp, n_comp = ndi.label(sub == 0)
    if n_comp == 0:
        return
    owner = _hole_owners3d(sub, comp, n_comp)  # the box's faces count as the border
    if owner.any():
        fill = owner[comp]
        sub[fill > 0] = fill[fill > 0]


@njit(cache=True, nogil=True)
def _count_labels(flat, top):  # pragma: no cover - numba
    counts = np.zeros(top + 1, np.int64)
    for v in flat:
        counts[v] += 1
    return counts


@njit(cache=True, nogil=True)
def _apply_lut(flat, lut, out):  # pragma: no cover - numba
    for i in range(flat.shape[0]):
        out[i] = lut[flat[i]]


def _relabel_by_size(masks: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """Labels 1..n (int32) of the masks with at least ``min_size`` voxels, in id order.

    Filling holes only grows masks, so checking sizes once, before it, is enough.
    """
    if not np.issubdtype(masks.dtype, np.integer) and masks.dtype != bool:
        raise TypeError(f"masks must be an integer label volume, got dtype {masks.dtype}")
    if masks.dtype == bool:
        masks = masks.view(np.uint8)
    flat = np.ascontiguousarray(masks).ravel()
    if flat.size == 0 or int(flat.max()) == 0:
        return np.zeros(masks.shape, np.int32), 0
    if int(flat.min()) < 0:
        raise ValueError("masks must be >= 0 (0 = background)")
    top = int(flat.max())
    if top > 4 * flat.size + 16:  # sparse huge ids: renumber first
        lab, ids = consecutive_labels(masks)
        flat, top = lab.ravel(), len(ids)
    counts = _count_labels(flat, top)
    keep = counts >= max(int(min_size), 1)
    keep[0] = False
    lut = np.cumsum(keep, dtype=np.int64).astype(np.int32)
    lut[~keep] = 0
    out = np.empty(flat.size, np.int32)
    _apply_lut(flat, lut, out)
    return out.reshape(masks.shape), int(lut[-1])


def compute_masks_3d(
    dP: np.ndarray,
    cellprob: np.ndarray,
    *,
    niter: int = 200,
    cellprob_threshold: float = 0.0,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
) -> np.ndarray:
    """Label volume from 3-D flows (dZ, dY, dX) and cell-probability logits.

    Parameters
    ----------
    dP : ndarray, shape (3, Z, Y, X)
        Flows (dZ, dY, dX) in network units (5x unit vectors).
    cellprob : ndarray, shape (Z, Y, X)
        Cell-probability logits.
    niter : int
        Euler steps.
    cellprob_threshold : float
        Foreground = ``cellprob > cellprob_threshold``.
    min_size : int
        Smallest mask kept, in voxels; <= 0 disables.
    max_size_fraction : float
        Masks larger than this fraction of the volume are dropped.

    Returns
    -------
    ndarray of uint16 (uint32 above 65535 masks), shape (Z, Y, X)

    Examples
    --------
    >>> from cp2_engine.postprocess._flows3d import masks_to_flows_3d
    >>> truth = np.zeros((12, 24, 24), np.uint16)
    >>> truth[1:11, 2:12, 2:12] = 1; truth[1:11, 12:22, 6:20] = 2
    >>> masks = compute_masks_3d(5 * masks_to_flows_3d(truth), np.where(truth > 0, 5.0, -5.0))
    >>> int(masks.max()), bool(((masks > 0) == (truth > 0)).all())
    (2, True)
    """
    dP = np.asarray(dP)
    cellprob = np.asarray(cellprob)
    if dP.ndim != 4 or dP.shape[0] != 3 or cellprob.shape != dP.shape[1:]:
        raise ValueError(
            f"expected dP (3, Z, Y, X) and cellprob (Z, Y, X), got {dP.shape}, {cellprob.shape}"
        )
    for name, arr in (("dP", dP), ("cellprob", cellprob)):
        if not np.issubdtype(arr.dtype, np.number) or not _all_finite(arr):
            raise ValueError(f"{name} must hold finite real numbers")
    fg = cellprob > cellprob_threshold
    if not fg.any():
        logger.info("no foreground voxels above cellprob_threshold=%s", cellprob_threshold)
        return np.zeros(cellprob.shape, np.uint16)
    positions = follow_masked_flows_3d(dP, fg, niter=niter)
    masks = get_masks_3d(positions, fg, max_size_fraction=max_size_fraction)
    return fill_holes_and_remove_small_masks_3d(masks, min_size=min_size)


def _stitch_map(iou: np.ndarray, prev_ids: np.ndarray, threshold: float, top: int):
    """New label of each current mask: its best previous partner, or a fresh label."""
    iou = iou.copy()
    iou[iou < threshold] = 0.0
    if iou.size:
        iou[iou < iou.max(axis=0, keepdims=True)] = 0.0
    best = iou.max(axis=1) if iou.size else np.zeros(iou.shape[0])
    new = np.zeros(iou.shape[0], np.int64)
    linked = best > 0
    if linked.any():
        new[linked] = prev_ids[iou[linked].argmax(axis=1)]
    fresh = np.flatnonzero(~linked)
    new[fresh] = top + 1 + np.arange(fresh.size)
    return new, top + fresh.size


def stitch_planes(masks: np.ndarray, *, stitch_threshold: float = 0.25) -> np.ndarray:
    """Link per-plane 2-D masks into 3-D objects by IoU between consecutive planes.

    Parameters
    ----------
    masks : ndarray, shape (Z, Y, X)
        Integer labels of each plane (labels of different planes are unrelated).
    stitch_threshold : float
        A mask joins the object of the previous plane's mask it overlaps best when their IoU is
        at least this, and that previous mask overlaps no other mask of this plane more.

    Returns
    -------
    ndarray of int64, shape (Z, Y, X)
        Labels unique across the volume (not renumbered; unmatched masks get new labels).

    Notes
    -----
    Cellpose 3.1's ``stitch3D`` keeps the labels of a plane unchanged when neither it nor any
    earlier plane was stitched and the previous plane is empty, which can give two objects the
    same label; here every unmatched mask gets a new label.

    Examples
    --------
    >>> planes = np.zeros((3, 6, 6), np.uint16)
    >>> planes[0, 1:4, 1:4] = 1; planes[1, 1:4, 1:5] = 7; planes[2, 4:6, 4:6] = 2
    >>> out = stitch_planes(planes, stitch_threshold=0.5)
    >>> int(out[0, 2, 2]) == int(out[1, 2, 2]), int(out[2, 5, 5])
    (True, 2)
    """
    from cp2_engine.metrics import iou_matrix

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a (Z, Y, X) stack of 2-D labels, got {masks.shape}")
    if not 0.0 < stitch_threshold <= 1.0:
        raise ValueError(f"stitch_threshold must lie in (0, 1], got {stitch_threshold!r}")
    out = np.zeros(masks.shape, np.int64)
    out[0], ids = consecutive_labels(masks[0])
    top = len(ids)
    for z in range(1, masks.shape[0]):
        cur, cur_ids = consecutive_labels(masks[z])
        if len(cur_ids) == 0:
            continue
        prev_ids = np.unique(out[z - 1])
        prev_ids = prev_ids[prev_ids > 0]
        iou = iou_matrix(cur, out[z - 1])
        new, top = _stitch_map(iou, prev_ids, stitch_threshold, top)
        out[z] = np.concatenate([[0], new])[cur]
    return out
