"""A simulated human annotator that corrects a prediction against the ground truth.

It works the way the annotator of the Cellpose 2.0 paper's human-in-the-loop experiments did:

1. Match predicted ROIs to true ROIs one-to-one (Hungarian assignment maximising IoU).
2. **Keep** every predicted ROI matched with IoU >= ``iou_threshold`` (default 0.5), with its
   *predicted* shape: a human accepts a good-enough ROI without retouching it.
3. **Delete** every other predicted ROI (false positives and badly segmented ROIs).
4. **Draw** every true ROI that was not matched: its true shape is painted, but only on pixels
   that no kept ROI holds (kept ROIs are never overwritten; this is also the rule of the Cellpose
   GUI, where a new ROI is cropped by the existing ones). Drawn ROIs are painted in label order
   and never overwrite each other either (true labels do not overlap). A drawn ROI that keeps
   fewer than ``min_drawn_pixels`` pixels after cropping is not drawn and not counted.

Every drawn ROI is counted: ``n_drawn`` is the human effort in the paper's Fig. 5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cp2_engine.hitl._accounting import check_labels, iou_table, match_rois

__all__ = ["Correction", "SimulatedAnnotator"]


@dataclass(frozen=True)
class Correction:
    """Result of one simulated correction.

    Attributes
    ----------
    labels : ndarray, shape (H, W)
        Corrected labels, consecutive from 1: kept ROIs first (in predicted label order), then
        drawn ROIs (in true label order). uint16, or uint32 above 65535 ROIs.
    n_kept : int
        Predicted ROIs kept unchanged.
    n_drawn : int
        True ROIs the annotator had to draw.
    n_deleted : int
        Predicted ROIs the annotator deleted.
    """

    labels: np.ndarray
    n_kept: int
    n_drawn: int
    n_deleted: int


@dataclass(frozen=True)
class SimulatedAnnotator:
    """Correct predictions against ground truth, counting the ROIs a human would draw.

    Parameters
    ----------
    iou_threshold : float
        A predicted ROI is kept when matched to a true ROI with at least this IoU (default 0.5).
    min_drawn_pixels : int
        Drawn ROIs left with fewer pixels after cropping by kept ROIs are skipped (default 1).

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 0, 0]])
    >>> c = SimulatedAnnotator().correct(truth, pred)
    >>> c.labels.tolist(), c.n_kept, c.n_drawn, c.n_deleted
    ([[1, 1, 0, 2, 2]], 1, 1, 0)
    """

    iou_threshold: float = 0.5
    min_drawn_pixels: int = 1

    def __post_init__(self):
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.min_drawn_pixels < 1:
            raise ValueError(f"min_drawn_pixels must be >= 1, got {self.min_drawn_pixels}")

    def correct(self, true_labels: np.ndarray, pred_labels: np.ndarray) -> Correction:
        """Correct ``pred_labels`` against ``true_labels`` (see the module docstring).

        Parameters
        ----------
        true_labels, pred_labels : ndarray of int, shape (H, W)
            Ground truth and prediction; 0 is background.

        Returns
        -------
        Correction

        Examples
        --------
        >>> truth = np.array([[1, 1, 1, 0, 0, 0]])
        >>> pred = np.array([[0, 0, 1, 0, 2, 2]])  # 1 is too small, 2 is a false positive
        >>> c = SimulatedAnnotator().correct(truth, pred)
        >>> c.labels.tolist(), c.n_kept, c.n_drawn, c.n_deleted
        ([[1, 1, 1, 0, 0, 0]], 0, 1, 2)
        """
        truth = check_labels(true_labels, name="true_labels")
        pred = check_labels(pred_labels, name="pred_labels")
        if truth.shape != pred.shape:
            raise ValueError(
                f"pred_labels shape {pred.shape} does not match true_labels shape {truth.shape}"
            )
        ids_t, ids_p, iou, _, _ = iou_table(truth, pred)
        rows, cols = match_rois(iou, min_iou=self.iou_threshold)
        kept_pred = ids_p[np.sort(cols)]
        missed_true = np.setdiff1d(ids_t, ids_t[rows])
        out = _relabel_subset(pred, kept_pred, offset=0)
        n_drawn = self._draw(out, truth, missed_true, offset=len(kept_pred))
        return Correction(
            labels=_compact_dtype(out),
            n_kept=len(kept_pred),
            n_drawn=n_drawn,
            n_deleted=len(ids_p) - len(kept_pred),
        )

    def _draw(self, out: np.ndarray, truth: np.ndarray, ids: np.ndarray, *, offset: int) -> int:
        """Paint true ROIs ``ids`` on background pixels of ``out``; return how many were drawn."""
        if len(ids) == 0:
            return 0
        painted = _relabel_subset(truth, ids, offset=0)
        painted[out != 0] = 0
        areas = np.bincount(painted.ravel(), minlength=len(ids) + 1)[1:]
        drawn = np.flatnonzero(areas >= self.min_drawn_pixels) + 1
        new_ids = np.zeros(len(ids) + 1, dtype=out.dtype)
        new_ids[drawn] = offset + np.arange(1, len(drawn) + 1)
        free = painted != 0
        out[free] = new_ids[painted[free]]
        return len(drawn)


def _relabel_subset(labels: np.ndarray, ids: np.ndarray, *, offset: int) -> np.ndarray:
    """Keep only ROIs ``ids`` (sorted) of ``labels``, renumbered offset+1, offset+2, ..."""
    out = np.zeros(labels.shape, dtype=np.int64)
    if len(ids) == 0:
        return out
    pos = np.searchsorted(ids, labels)
    pos_clipped = np.minimum(pos, len(ids) - 1)
    hit = (ids[pos_clipped] == labels) & (labels != 0)
    out[hit] = pos_clipped[hit] + 1 + offset
    return out


def _compact_dtype(labels: np.ndarray) -> np.ndarray:
    """uint16 labels, or uint32 when there are more than 65535 ROIs."""
    dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    return labels.astype(dtype)
