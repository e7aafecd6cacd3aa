"""Hungarian matching of label images: :func:`match_masks`, :func:`mask_ious` and the AJI.

The Hungarian matching (:func:`scipy.optimize.linear_sum_assignment`) is run separately on each
connected group of candidate pairs, which keeps images with thousands of masks fast.

Conventions for empty inputs: a ratio whose denominator is zero is 1.0 when *both* label images
are empty (nothing to find and nothing wrongly found) and 0.0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from ._overlap import _check_pair, _check_threshold, _Overlap, _overlap, _readonly

__all__ = [
    "MaskIoUs",
    "Matching",
    "aggregated_jaccard_index",
    "mask_ious",
    "match_masks",
    "unmatched_masks",
]


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


def unmatched_masks(masks_true, masks_pred, *, threshold: float = 0.5):
    """The false negatives and false positives as label images, at an IoU threshold.

    Returns ``(fn_masks, fp_masks)``: the true masks no prediction matches, and the predicted
    masks that match no true mask (one-to-one Hungarian matching, as :func:`match_masks`).

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 0, 0, 3]])
    >>> fn, fp = unmatched_masks(truth, pred)
    >>> fn.tolist(), fp.tolist()
    ([[0, 0, 0, 2, 2, 2]], [[0, 0, 0, 0, 0, 3]])
    """
    truth, pred = np.asarray(masks_true), np.asarray(masks_pred)
    pairs = np.asarray(match_masks(truth, pred, threshold=threshold).pairs).reshape(-1, 2)
    fn = np.where(np.isin(truth, pairs[:, 0], invert=True), truth, 0)
    fp = np.where(np.isin(pred, pairs[:, 1], invert=True), pred, 0)
    return fn, fp
