"""Label overlap: input checks, renumbering, the sparse contact table and the IoU matrix.

Every function accepts integer label images (0 = background) with any label values: labels are
renumbered internally, so gaps and permutations never change a score. Overlaps are counted with
``numpy.bincount``-style loops and kept sparse (only pairs of masks that touch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: Largest dense n_true x n_pred contact table (int32, zero pages are never touched).
_DENSE_TABLE_LIMIT = 2**26

__all__ = ["iou_matrix"]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class _Labels:
    """The masks of a label image: a lookup table to indices 1..n, original labels, areas."""

    flat: np.ndarray  # the label image, raveled (values index ``lut``)
    lut: np.ndarray  # (max_label + 1,) intp: label value -> 1..n, 0 for background
    labels: np.ndarray  # (n,) original label values, ascending
    areas: np.ndarray  # (n,) pixel counts

    @property
    def n(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class _Overlap:
    """Sparse contact table between two renumbered label images (0-based mask indices)."""

    true: _Labels
    pred: _Labels
    rows: np.ndarray  # (k,) index of the true mask
    cols: np.ndarray  # (k,) index of the predicted mask
    inter: np.ndarray  # (k,) shared pixels
    iou: np.ndarray  # (k,) float64


# --------------------------------------------------------------------------- validation


def _check_labels(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image (0 = background), got dtype {arr.dtype}"
        )
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must be a label image with at least 2 dimensions, got {arr.ndim}"
        )
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(f"{name} has negative labels (min {arr.min()}); expected labels >= 0")
    return arr


def _check_pair(true, pred) -> tuple[np.ndarray, np.ndarray]:
    true = _check_labels(true, "masks_true")
    pred = _check_labels(pred, "masks_pred")
    if true.shape != pred.shape:
        raise ValueError(
            f"masks_true and masks_pred must have the same shape, got {true.shape} and "
            f"{pred.shape}"
        )
    return true, pred


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU thresholds must be in (0, 1], got {threshold}")
    return threshold


# --------------------------------------------------------------------------- overlap


@numba.njit(cache=True, nogil=True)
def _bincount(flat, top):  # pragma: no cover - compiled
    counts = np.zeros(top + 1, dtype=np.int64)
    for v in flat:
        counts[v] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def _contact_table(flat_t, flat_p, lut_t, lut_p, n_t, n_p):  # pragma: no cover - compiled
    """Dense (n_t + 1, n_p + 1) pixel counts of every (true, predicted) label pair; row and
    column 0 are the background, so the loop has no branch."""
    table = np.zeros((n_t + 1, n_p + 1), dtype=np.int32)
    for i in range(flat_t.size):
        table[lut_t[flat_t[i]], lut_p[flat_p[i]]] += 1
    return table


def _contacts(flat_t, flat_p, lut_t, lut_p, n_t, n_p):
    """Sparse contact table: (row, col, count) for every touching pair of masks."""
    table = _contact_table(flat_t, flat_p, lut_t, lut_p, n_t, n_p)[1:, 1:]
    rows, cols = np.nonzero(table)
    return rows.astype(np.intp), cols.astype(np.intp), table[rows, cols].astype(np.int64)


def _renumber(arr: np.ndarray) -> _Labels:
    flat = arr.ravel()
    top = int(flat.max()) if flat.size else 0
    if top > max(4 * flat.size, 2**20):  # huge label values: sort instead of a lookup table
        uniq, inverse = np.unique(flat, return_inverse=True)
        start = 1 if uniq[0] == 0 else 0
        flat = (inverse.ravel() + (1 - start)).astype(np.intp)
        uniq = uniq[start:]
        top = len(uniq)
        counts = _bincount(flat, top)
        labels = uniq
    else:
        counts = _bincount(flat, top)
        labels = np.flatnonzero(counts[1:]) + 1
    lut = np.zeros(top + 1, dtype=np.intp)
    present = np.flatnonzero(counts[1:]) + 1
    lut[present] = np.arange(1, len(present) + 1)
    return _Labels(
        flat=flat, lut=lut, labels=labels.astype(np.int64), areas=counts[present].astype(np.int64)
    )


def _overlap(true: np.ndarray, pred: np.ndarray) -> _Overlap:
    lt, lp = _renumber(true), _renumber(pred)
    if lt.n * lp.n <= _DENSE_TABLE_LIMIT:
        rows, cols, inter = _contacts(lt.flat, lp.flat, lt.lut, lp.lut, lt.n, lp.n)
    else:  # too many masks for a dense table: count pairs by sorting
        it, ip = lt.lut[lt.flat], lp.lut[lp.flat]
        both = (it > 0) & (ip > 0)
        key = (it[both] - 1).astype(np.int64) * lp.n + (ip[both] - 1)
        uniq, inter = np.unique(key, return_counts=True)
        rows, cols = (uniq // lp.n).astype(np.intp), (uniq % lp.n).astype(np.intp)
    union = lt.areas[rows] + lp.areas[cols] - inter
    return _Overlap(lt, lp, rows, cols, inter, inter / union)


def iou_matrix(masks_true, masks_pred) -> np.ndarray:
    """Dense IoU of every true mask (rows) with every predicted mask (columns).

    Rows and columns follow the ascending order of the non-zero labels present in each image,
    so gaps in the labels do not create empty rows.

    Parameters
    ----------
    masks_true, masks_pred : numpy.ndarray
        Integer label images of the same shape, 0 = background.

    Returns
    -------
    numpy.ndarray
        ``(n_true, n_pred)`` float64 IoU matrix.

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 0], [0, 0, 5, 5]])
    >>> b = np.array([[2, 2, 2, 0], [0, 0, 0, 7]])
    >>> iou_matrix(a, b).round(2)
    array([[0.67, 0.  ],
           [0.  , 0.5 ]])
    """
    ov = _overlap(*_check_pair(masks_true, masks_pred))
    out = np.zeros((ov.true.n, ov.pred.n))
    out[ov.rows, ov.cols] = ov.iou
    return out
