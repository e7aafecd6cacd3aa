"""Average precision ``AP = TP / (TP + FP + FN)`` at several IoU thresholds.

``AP = 1`` for two empty images, and ``AP = 0`` when either side is empty and the other is not
(Cellpose also gives 0 when the prediction is empty; it gives NaN when both are empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._matching import _tp_at
from ._overlap import _check_pair, _check_threshold, _overlap, _readonly

__all__ = ["APResult", "average_precision"]


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
