"""Instance-segmentation metrics: label overlap, IoU, Hungarian matching and average precision.

Every function accepts integer label images (0 = background) with any label values: labels are
renumbered internally, so gaps and permutations never change a score. Overlaps are counted with
``numpy.bincount`` and kept sparse (only pairs of masks that touch), and the Hungarian matching
(:func:`scipy.optimize.linear_sum_assignment`) is run separately on each connected group of
candidate pairs, which keeps images with thousands of masks fast.

Conventions for empty inputs: a ratio whose denominator is zero is 1.0 when *both* label images
are empty (nothing to find and nothing wrongly found) and 0.0 otherwise. So ``AP = 1`` for two
empty images, and ``AP = 0`` when either side is empty and the other is not (Cellpose also gives
0 when the prediction is empty; it gives NaN when both are empty).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

#: Largest dense n_true x n_pred contact table (int32, zero pages are never touched).
_DENSE_TABLE_LIMIT = 2**26

__all__ = [
    "APResult",
    "MaskIoUs",
    "Matching",
    "aggregated_jaccard_index",
    "average_precision",
    "diameters",
    "iou_matrix",
    "mask_ious",
    "match_masks",
]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Matching:
    """Result of matching one label image against another at one IoU threshold.

    Attributes
    ----------
    threshold : float
        IoU threshold a pair needs to count as a true positive.
    tp, fp, fn : int
        True positives (matched pairs), false positives (unmatched predicted masks) and false
        negatives (unmatched true masks).
    n_true, n_pred : int
        Number of masks in each image.
    precision, recall, f1 : float
        ``tp / n_pred``, ``tp / n_true`` and their harmonic mean (see the module notes for
        empty images).
    accuracy : float
        ``tp / (tp + fp + fn)``, the score Cellpose calls average precision.
    pairs : numpy.ndarray
        ``(tp, 2)`` int64 array of matched ``(true_label, pred_label)`` in the original label
        values, sorted by true label.
    ious : numpy.ndarray
        ``(tp,)`` float64 IoU of each matched pair.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    pairs: np.ndarray = field(repr=False)
    ious: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class APResult:
    """Average precision of one or more image pairs at several IoU thresholds.

    Attributes
    ----------
    thresholds : numpy.ndarray
        ``(n_thresholds,)`` IoU thresholds.
    ap, tp, fp, fn : numpy.ndarray
        ``(n_images, n_thresholds)`` arrays, always two-dimensional (also for a single pair).
        ``ap = tp / (tp + fp + fn)``; ``tp``, ``fp``, ``fn`` are int64.
    """

    thresholds: np.ndarray
    ap: np.ndarray = field(repr=False)
    tp: np.ndarray = field(repr=False)
    fp: np.ndarray = field(repr=False)
    fn: np.ndarray = field(repr=False)

    @property
    def mean_ap(self) -> np.ndarray:
        """``(n_thresholds,)`` AP averaged over images."""
        return self.ap.mean(axis=0)


@dataclass(frozen=True, eq=False)
class MaskIoUs:
    """IoU of each true mask with the predicted mask it is matched to.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(n_true,)`` true labels, ascending.
    iou : numpy.ndarray
        ``(n_true,)`` IoU with the matched predicted mask, 0.0 where unmatched.
    matched : numpy.ndarray
        ``(n_true,)`` label of the matched predicted mask, 0 where unmatched.
    """

    labels: np.ndarray
    iou: np.ndarray
    matched: np.ndarray


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
def _contacts(flat_t, flat_p, lut_t, lut_p, n_t, n_p):  # pragma: no cover - compiled
    """Sparse contact table: (row, col, count) for every touching pair of masks."""
    table = np.zeros((n_t, n_p), dtype=np.int32)
    cap = n_t + n_p + 16
    rows = np.empty(cap, dtype=np.intp)
    cols = np.empty(cap, dtype=np.intp)
    k = 0
    for i in range(flat_t.size):
        a = lut_t[flat_t[i]] - 1
        b = lut_p[flat_p[i]] - 1
        if a < 0 or b < 0:
            continue
        if table[a, b] == 0:
            if k == cap:
                cap *= 2
                rows = np.concatenate((rows, np.empty(cap - k, dtype=np.intp)))
                cols = np.concatenate((cols, np.empty(cap - k, dtype=np.intp)))
            rows[k] = a
            cols[k] = b
            k += 1
        table[a, b] += 1
    inter = np.empty(k, dtype=np.int64)
    for j in range(k):
        inter[j] = table[rows[j], cols[j]]
    return rows[:k].copy(), cols[:k].copy(), inter


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


# --------------------------------------------------------------------------- matching


def _components(ov: _Overlap, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected group of each kept edge in the bipartite graph, and the group sizes."""
    rows, cols = ov.rows[keep], ov.cols[keep]
    n = ov.true.n + ov.pred.n
    graph = sparse.coo_array(
        (np.ones(len(rows), dtype=np.int8), (rows, cols + ov.true.n)), shape=(n, n)
    )
    _, node_group = connected_components(graph, directed=False)
    group = node_group[rows]
    edges_per_group = np.bincount(group, minlength=node_group.max() + 1)
    return group, edges_per_group


def _match(ov: _Overlap, keep: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Indices (into the edge arrays) of a Hungarian matching restricted to ``keep`` edges.

    The matching maximises the number of matched ``primary`` edges, then the summed IoU.
    Each connected group of edges is solved on its own: a group with a single edge is
    matched directly, larger groups go to :func:`~scipy.optimize.linear_sum_assignment`.
    """
    edges = np.flatnonzero(keep)
    if edges.size == 0:
        return edges
    group, edges_per_group = _components(ov, keep)
    single = edges_per_group[group] == 1
    chosen = [edges[single]]
    multi = edges[~single]
    order = np.argsort(group[~single], kind="stable")
    multi, multi_group = multi[order], group[~single][order]
    splits = np.flatnonzero(np.diff(multi_group)) + 1
    for block in np.split(multi, splits) if multi.size else []:
        chosen.append(_match_block(ov, block, primary))
    return np.sort(np.concatenate(chosen))


def _match_block(ov: _Overlap, block: np.ndarray, primary: np.ndarray) -> np.ndarray:
    rows, rinv = np.unique(ov.rows[block], return_inverse=True)
    cols, cinv = np.unique(ov.cols[block], return_inverse=True)
    n_min = min(len(rows), len(cols))
    cost = np.zeros((len(rows), len(cols)))
    cost[rinv, cinv] = -primary[block].astype(np.float64) - ov.iou[block] / (2 * n_min)
    edge_id = np.full((len(rows), len(cols)), -1, dtype=np.intp)
    edge_id[rinv, cinv] = block
    r, c = linear_sum_assignment(cost)
    picked = edge_id[r, c]
    return picked[picked >= 0]


def _ratio(num: float, den: float, *, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def _tp_at(ov: _Overlap, threshold: float) -> np.ndarray:
    """Matched edge indices at one IoU threshold."""
    hit = ov.iou >= threshold
    return _match(ov, hit, hit)


def match_masks(masks_true, masks_pred, *, threshold: float = 0.5) -> Matching:
    """Match predicted masks to true masks one-to-one at an IoU threshold.

    The Hungarian matching maximises the number of pairs with ``IoU >= threshold``; among
    equally many pairs it takes the one with the largest summed IoU.

    Parameters
    ----------
    masks_true, masks_pred : numpy.ndarray
        Integer label images of the same shape, 0 = background. Any label values.
    threshold : float, optional
        IoU a pair needs to be a true positive, in (0, 1]. Default 0.5.

    Returns
    -------
    Matching
        Counts, precision/recall/F1 and the matched label pairs with their IoUs.

    Raises
    ------
    ValueError
        If the shapes differ, labels are negative or the threshold is outside (0, 1].
    TypeError
        If a label image is not of integer dtype.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2, 2]])
    >>> p = np.array([[9, 9, 0, 0, 4]])
    >>> m = match_masks(t, p, threshold=0.6)
    >>> m.tp, m.fp, m.fn, m.pairs.tolist()
    (1, 1, 1, [[1, 9]])
    >>> match_masks(t, p, threshold=0.5).pairs.tolist()
    [[1, 9], [2, 4]]
    """
    threshold = _check_threshold(threshold)
    ov = _overlap(*_check_pair(masks_true, masks_pred))
    picked = _tp_at(ov, threshold)
    tp, n_true, n_pred = len(picked), ov.true.n, ov.pred.n
    empty = n_true == 0 and n_pred == 0
    pairs = np.stack([ov.true.labels[ov.rows[picked]], ov.pred.labels[ov.cols[picked]]], axis=1)
    order = np.argsort(pairs[:, 0], kind="stable")
    return Matching(
        threshold=threshold,
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        n_true=n_true,
        n_pred=n_pred,
        precision=_ratio(tp, n_pred, both_empty=empty),
        recall=_ratio(tp, n_true, both_empty=empty),
        f1=_ratio(2 * tp, n_true + n_pred, both_empty=empty),
        accuracy=_ratio(tp, n_true + n_pred - tp, both_empty=empty),
        pairs=_readonly(pairs[order].reshape(-1, 2)),
        ious=_readonly(ov.iou[picked][order]),
    )


def _as_list(masks) -> list:
    if isinstance(masks, np.ndarray):
        return [masks]
    if isinstance(masks, Sequence) and not isinstance(masks, str):
        return list(masks)
    raise TypeError(f"expected a label image or a list of label images, got {type(masks)}")


def average_precision(
    masks_true, masks_pred, *, thresholds: Sequence[float] = (0.5, 0.75, 0.9)
) -> APResult:
    """Average precision (matching accuracy) at several IoU thresholds.

    For each image and threshold, ``AP = TP / (TP + FP + FN)`` with TP from the one-to-one
    Hungarian matching of :func:`match_masks`. This is the score the Cellpose papers call
    average precision.

    Parameters
    ----------
    masks_true, masks_pred : numpy.ndarray or sequence of numpy.ndarray
        One label image each, or lists of equal length; each pair must share its shape.
    thresholds : sequence of float, optional
        IoU thresholds in (0, 1]. Default ``(0.5, 0.75, 0.9)``.

    Returns
    -------
    APResult
        ``ap``, ``tp``, ``fp``, ``fn`` of shape ``(n_images, n_thresholds)``; two empty images
        score AP 1.0, one empty image against a non-empty one scores 0.0.

    Raises
    ------
    ValueError
        If the lists differ in length, a pair differs in shape, labels are negative or a
        threshold is outside (0, 1].
    TypeError
        If a label image is not of integer dtype.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 3, 3, 3]])
    >>> p = np.array([[2, 2, 0, 0, 0, 3]])
    >>> r = average_precision(t, p, thresholds=(0.3, 0.9))
    >>> r.ap.shape, r.tp.tolist(), r.ap.round(2).tolist()
    ((1, 2), [[2, 1]], [[1.0, 0.33]])
    """
    trues, preds = _as_list(masks_true), _as_list(masks_pred)
    if len(trues) != len(preds):
        raise ValueError(
            f"masks_true and masks_pred must hold as many images, got {len(trues)} and "
            f"{len(preds)}"
        )
    ths = np.array([_check_threshold(t) for t in np.atleast_1d(thresholds)], dtype=np.float64)
    tp = np.zeros((len(trues), len(ths)), dtype=np.int64)
    n_true = np.zeros(len(trues), dtype=np.int64)
    n_pred = np.zeros(len(trues), dtype=np.int64)
    for i, (true, pred) in enumerate(zip(trues, preds)):
        ov = _overlap(*_check_pair(true, pred))
        n_true[i], n_pred[i] = ov.true.n, ov.pred.n
        tp[i] = [len(_tp_at(ov, th)) for th in ths]
    fp, fn = n_pred[:, None] - tp, n_true[:, None] - tp
    den = tp + fp + fn
    both_empty = np.broadcast_to(((n_true == 0) & (n_pred == 0))[:, None], den.shape)
    ap = np.where(den > 0, tp / np.maximum(den, 1), np.where(both_empty, 1.0, 0.0))
    return APResult(
        thresholds=_readonly(ths),
        ap=_readonly(ap),
        tp=_readonly(tp),
        fp=_readonly(fp),
        fn=_readonly(fn),
    )


def _best_iou_matching(ov: _Overlap) -> np.ndarray:
    """Edges of the matching used by :func:`mask_ious` (all touching pairs are candidates)."""
    keep = np.ones(len(ov.iou), dtype=bool)
    return _match(ov, keep, ov.iou >= 0.5)


def mask_ious(masks_true, masks_pred) -> MaskIoUs:
    """IoU of every true mask with its matched predicted mask.

    All touching pairs are candidates; the Hungarian matching maximises the number of pairs
    with IoU >= 0.5 and then the summed IoU, so a true mask may also be matched below 0.5.

    Parameters
    ----------
    masks_true, masks_pred : numpy.ndarray
        Integer label images of the same shape, 0 = background.

    Returns
    -------
    MaskIoUs
        Per true mask (ascending label): its label, matched IoU (0 if none) and matched
        predicted label (0 if none).

    Examples
    --------
    >>> t = np.array([[1, 1, 1, 0, 4, 4]])
    >>> p = np.array([[3, 3, 0, 0, 0, 0]])
    >>> r = mask_ious(t, p)
    >>> r.labels.tolist(), r.iou.round(2).tolist(), r.matched.tolist()
    ([1, 4], [0.67, 0.0], [3, 0])
    """
    ov = _overlap(*_check_pair(masks_true, masks_pred))
    picked = _best_iou_matching(ov)
    iou = np.zeros(ov.true.n)
    matched = np.zeros(ov.true.n, dtype=np.int64)
    iou[ov.rows[picked]] = ov.iou[picked]
    matched[ov.rows[picked]] = ov.pred.labels[ov.cols[picked]]
    return MaskIoUs(
        labels=_readonly(ov.true.labels), iou=_readonly(iou), matched=_readonly(matched)
    )


def aggregated_jaccard_index(masks_true, masks_pred) -> float:
    """Aggregated Jaccard Index (Kumar et al., 2017).

    Each true mask is paired with the predicted mask of highest IoU; the index is the summed
    intersection of these pairs over the summed union, where the union also counts unpaired
    true masks and every predicted mask that was never chosen. Unlike Cellpose's simplified
    variant (matched overlap over the foreground union), this penalises unmatched objects.

    Parameters
    ----------
    masks_true, masks_pred : numpy.ndarray
        Integer label images of the same shape, 0 = background.

    Returns
    -------
    float
        AJI in [0, 1]; 1.0 when both images are empty.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2, 2]])
    >>> aggregated_jaccard_index(t, t)
    1.0
    >>> p = np.array([[1, 1, 0, 0, 0]])
    >>> round(aggregated_jaccard_index(t, p), 3)
    0.5
    """
    ov = _overlap(*_check_pair(masks_true, masks_pred))
    if ov.true.n == 0 and ov.pred.n == 0:
        return 1.0
    order = np.lexsort((ov.iou, ov.rows))  # by row, then IoU ascending
    last = np.r_[ov.rows[order][1:] != ov.rows[order][:-1], True]
    best = order[last]  # one edge per true mask that touches anything
    inter = ov.inter[best].sum()
    union = (ov.true.areas[ov.rows[best]] + ov.pred.areas[ov.cols[best]] - ov.inter[best]).sum()
    untouched_true = np.ones(ov.true.n, dtype=bool)
    untouched_true[ov.rows[best]] = False
    unused_pred = np.ones(ov.pred.n, dtype=bool)
    unused_pred[ov.cols[best]] = False
    union += ov.true.areas[untouched_true].sum() + ov.pred.areas[unused_pred].sum()
    return float(inter / union) if union else 0.0


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
