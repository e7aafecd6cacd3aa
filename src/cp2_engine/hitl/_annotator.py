"""A simulated human annotator that corrects a prediction against the ground truth.

It works the way the annotator of the Cellpose 2.0 paper's human-in-the-loop experiments did:

1. Match predicted ROIs to true ROIs one-to-one (Hungarian assignment maximising IoU), keeping
   pairs with IoU >= ``iou_threshold`` (default 0.5).
2. **Keep** every matched predicted ROI whose IoU is at least ``keep_iou`` (default
   :data:`KEEP_IOU` = 0.75), with its *predicted* shape: a human accepts a good outline without
   retouching it.
3. **Fix** every matched pair below ``keep_iou``: the outline is visibly wrong, so the human
   redraws it (the true ROI replaces the predicted one). A fixed ROI is human effort like a drawn
   one and is counted separately (``n_fixed``).
4. **Delete** every unmatched predicted ROI (false positives and badly segmented ROIs).
5. **Draw** every true ROI that was not matched: its true shape is painted, but only on pixels
   that no kept ROI holds (kept ROIs are never overwritten; this is also the rule of the Cellpose
   GUI, where a new ROI is cropped by the existing ones). Drawn and fixed ROIs are painted in true
   label order and never overwrite each other either (true labels do not overlap). One that keeps
   fewer than ``min_drawn_pixels`` pixels after cropping is not painted and not counted.

The human effort of the paper's Fig. 5 is ``n_human = n_drawn + n_fixed``. ``keep_iou=0.5``
(= ``iou_threshold``) is the lenient annotator that keeps every ROI matched at IoU 0.5, fixes
nothing and so trains on outlines a person would have corrected. Why 0.75 is the default:
of the matched outlines of the bundled models on real validation images
(``benchmarks/annotator_keep_iou.py``, table in ``docs/hitl.md``), 76-97 % of the nuclei and 91 %
of the large whole cells lie above 0.75, the paper's strict AP threshold; an outline below it is
off by more than ~13 % of the radius (2 px on a 30-px cell), which a person sees and corrects.
0.8 would also redraw small objects whose outline is half a pixel off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cp2_engine.hitl._accounting import check_labels, iou_table, match_rois

__all__ = ["KEEP_IOU", "Correction", "SimulatedAnnotator"]

#: Default IoU at or above which the simulated annotator keeps a predicted ROI unchanged.
KEEP_IOU = 0.75
#: IoU a one-click proposal needs with a drawn ROI to count as "assisted".
ASSIST_IOU = 0.75


@dataclass(frozen=True)
class Correction:
    """Result of one simulated correction.

    Attributes
    ----------
    labels : ndarray, shape (H, W)
        Corrected labels, consecutive from 1: kept ROIs first (in predicted label order), then
        drawn and fixed ROIs (in true label order). uint16, or uint32 above 65535 ROIs.
    n_kept : int
        Predicted ROIs kept unchanged.
    n_drawn : int
        True ROIs the model missed, which the annotator had to draw.
    n_deleted : int
        Predicted ROIs the annotator deleted (matched to no true ROI).
    n_fixed : int
        Predicted ROIs matched with an IoU below ``keep_iou``, redrawn by the annotator.
    n_assisted : int
        Of the ``n_drawn`` missed ROIs, how many one click on their centre would have drawn
        (a :func:`~cp2_engine.postprocess.propose_roi` proposal from the model's flows with
        IoU >= :data:`ASSIST_IOU`); 0 unless ``correct`` was given the ``segmentation``.
    """

    labels: np.ndarray
    n_kept: int
    n_drawn: int
    n_deleted: int
    n_fixed: int = 0
    n_assisted: int = 0

    @property
    def n_human(self) -> int:
        """ROIs the human drew: missed ones plus fixed ones (the paper's effort)."""
        return self.n_drawn + self.n_fixed


@dataclass(frozen=True)
class SimulatedAnnotator:
    """Correct predictions against ground truth, counting the ROIs a human would draw.

    Parameters
    ----------
    iou_threshold : float
        A predicted ROI is matched to a true ROI with at least this IoU (default 0.5); unmatched
        predictions are deleted and unmatched true ROIs drawn.
    keep_iou : float or None
        A matched predicted ROI is kept unchanged only with at least this IoU (default
        :data:`KEEP_IOU`, 0.75); below it, it is fixed (redrawn). None means ``iou_threshold``
        (nothing is ever fixed: the lenient annotator). Must not be below ``iou_threshold``.
    min_drawn_pixels : int
        Drawn ROIs left with fewer pixels after cropping by kept ROIs are skipped (default 1).

    Examples
    --------
    >>> truth = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[1, 1, 0, 0, 0]])
    >>> c = SimulatedAnnotator().correct(truth, pred)
    >>> c.labels.tolist(), c.n_kept, c.n_drawn, c.n_deleted
    ([[1, 1, 0, 2, 2]], 1, 1, 0)
    >>> sloppy = np.array([[1, 1, 1, 2, 2]])  # ROI 1 at IoU 2/3: fixed (redrawn) at 0.75
    >>> c = SimulatedAnnotator().correct(truth, sloppy)
    >>> c.labels.tolist(), c.n_kept, c.n_fixed, c.n_drawn, c.n_human
    ([[2, 2, 0, 1, 1]], 1, 1, 0, 1)
    """

    iou_threshold: float = 0.5
    keep_iou: float | None = KEEP_IOU
    min_drawn_pixels: int = 1

    def __post_init__(self):
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.keep_iou is None:
            object.__setattr__(self, "keep_iou", float(self.iou_threshold))
        if not self.iou_threshold <= self.keep_iou <= 1.0:
            raise ValueError(
                f"keep_iou must be in [iou_threshold, 1] = [{self.iou_threshold}, 1], "
                f"got {self.keep_iou}"
            )
        if self.min_drawn_pixels < 1:
            raise ValueError(f"min_drawn_pixels must be >= 1, got {self.min_drawn_pixels}")

    def correct(
        self, true_labels: np.ndarray, pred_labels: np.ndarray, *, segmentation=None
    ) -> Correction:
        """Correct ``pred_labels`` against ``true_labels`` (see the module docstring).

        Parameters
        ----------
        true_labels, pred_labels : ndarray of int, shape (H, W)
            Ground truth and prediction; 0 is background.
        segmentation : Segmentation, optional
            The model's result behind ``pred_labels`` (``flows``, ``cellprob``, ``diameter``,
            ``niter``, ``config``): then ``n_assisted`` counts the drawn ROIs one click would
            have drawn (see :class:`Correction`).

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
        keep = iou[rows, cols] >= self.keep_iou
        kept_pred = ids_p[np.sort(cols[keep])]
        fixed_true = ids_t[rows[~keep]]
        redraw = np.setdiff1d(ids_t, ids_t[rows[keep]])  # missed and fixed, sorted
        out = _relabel_subset(pred, kept_pred, offset=0)
        painted = self._draw(out, truth, redraw, offset=len(kept_pred))
        n_fixed = int(np.isin(painted, fixed_true).sum())
        n_kept = len(kept_pred)
        missed = n_kept + 1 + np.flatnonzero(~np.isin(painted, fixed_true))
        n_assisted = 0 if segmentation is None else _assisted(out, missed, segmentation, n_kept)
        return Correction(
            labels=_compact_dtype(out),
            n_kept=len(kept_pred),
            n_drawn=len(painted) - n_fixed,
            n_deleted=len(ids_p) - len(rows),
            n_fixed=n_fixed,
            n_assisted=n_assisted,
        )

    def _draw(
        self, out: np.ndarray, truth: np.ndarray, ids: np.ndarray, *, offset: int
    ) -> np.ndarray:
        """Paint true ROIs ``ids`` on background pixels of ``out``; return the ids painted."""
        if len(ids) == 0:
            return ids
        painted = _relabel_subset(truth, ids, offset=0)
        painted[out != 0] = 0
        areas = np.bincount(painted.ravel(), minlength=len(ids) + 1)[1:]
        drawn = np.flatnonzero(areas >= self.min_drawn_pixels) + 1
        new_ids = np.zeros(len(ids) + 1, dtype=out.dtype)
        new_ids[drawn] = offset + np.arange(1, len(drawn) + 1)
        free = painted != 0
        out[free] = new_ids[painted[free]]
        return ids[drawn - 1]


def _assisted(out: np.ndarray, drawn: np.ndarray, seg, n_kept: int) -> int:
    """How many of the drawn ROIs ``drawn`` (labels of ``out``) one click on their centre
    would have drawn from the model's flows, cropped by the ROIs the annotator kept."""
    from cp2_engine.postprocess import propose_roi

    kept = np.where(out <= n_kept, out, 0)  # the kept ROIs are labels 1..n_kept
    n = 0
    for label in drawn:
        roi = out == label
        ys, xs = np.nonzero(roi)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        proposal = propose_roi(seg.flows, seg.cellprob, (ys[k], xs[k]), labels=kept,
                               diameter=seg.diameter, niter=seg.niter,
                               cellprob_threshold=seg.config.cellprob_threshold)  # fmt: skip
        n += (proposal & roi).sum() >= ASSIST_IOU * (proposal | roi).sum()
    return int(n)


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
