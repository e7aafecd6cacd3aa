"""Per-ROI provenance of a human correction: accepted, edited, drawn or deleted.

Given the labels a model predicted and the labels a human (or the simulated annotator) returned
after correcting them, every ROI gets one status:

``accepted``
    the corrected ROI is matched to a predicted ROI with IoU >= ``accept_iou`` (default
    :data:`ACCEPT_IOU` = 0.95). An untouched ROI has IoU 1.
``edited``
    the corrected ROI is matched to a predicted ROI, but with a lower IoU (the human changed it).
``drawn``
    the corrected ROI is matched to no predicted ROI (the human drew it).
``deleted``
    a predicted ROI matched to no corrected ROI (the human removed it).

Matching is one-to-one: the Hungarian assignment that maximises the summed IoU, keeping only
pairs that overlap. So a split of one predicted ROI into two counts as one ``edited`` plus one
``drawn``, and a merge of two predicted ROIs counts as one ``edited`` plus one ``deleted``.
The counts always satisfy ``accepted + edited + drawn == n_corrected`` and
``accepted + edited + deleted == n_predicted``.

Human effort is ``n_human = edited + drawn``. For a correction by the
:class:`~cp2_engine.hitl.SimulatedAnnotator` (``keep_iou`` <= ``accept_iou``) this equals the
annotator's ``n_fixed + n_drawn``: its kept ROIs are untouched (accepted), a fixed ROI (redrawn
because its outline was below ``keep_iou``) is the true ROI in place of the predicted one
(edited, or drawn when it no longer overlaps it), and a missed ROI is drawn (or edited when a
deleted prediction overlapped it).

This module is pure (numpy and scipy only), so the napari plugin reuses it as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["ACCEPT_IOU", "STATUSES", "RoiAccounting", "RoiRecord", "account_rois"]

#: IoU at or above which a corrected ROI counts as accepted from the model unchanged.
ACCEPT_IOU = 0.95

#: The statuses a ROI can have.
STATUSES = ("accepted", "edited", "drawn", "deleted")


@dataclass(frozen=True)
class RoiRecord:
    """Provenance of one ROI.

    Attributes
    ----------
    label : int
        Label of the ROI in the corrected labels (0 for a deleted ROI).
    status : str
        One of :data:`STATUSES`.
    pred_label : int
        Label of the matched predicted ROI (0 for a drawn ROI).
    iou : float
        IoU with the matched ROI (0.0 when unmatched).
    area : int
        Pixel count of the ROI (of the predicted ROI for a deleted one).
    """

    label: int
    status: str
    pred_label: int
    iou: float
    area: int


@dataclass(frozen=True)
class RoiAccounting:
    """Counts and per-ROI table of one correction (see the module docstring).

    Attributes
    ----------
    n_accepted, n_edited, n_drawn, n_deleted : int
        Number of ROIs of each status.
    rois : tuple of RoiRecord
        One record per corrected ROI (sorted by label), then one per deleted predicted ROI.
    accept_iou : float
        The threshold that separated accepted from edited.
    n_assisted : int
        Drawn ROIs that a click proposed (from the model's flows) and the human accepted:
        part of ``n_drawn``, counted separately (see :meth:`with_assisted`).
    """

    n_accepted: int
    n_edited: int
    n_drawn: int
    n_deleted: int
    rois: tuple[RoiRecord, ...]
    accept_iou: float = ACCEPT_IOU
    n_assisted: int = 0

    def with_assisted(self, labels) -> RoiAccounting:
        """This accounting with ``n_assisted``: how many of the corrected ROIs ``labels``
        (drawn with a click) are drawn ROIs.

        Examples
        --------
        >>> acc = account_rois(np.array([[1, 0, 0]]), np.array([[1, 0, 2]]))
        >>> acc.with_assisted([2]).n_assisted, acc.with_assisted([1]).n_assisted
        (1, 0)
        """
        wanted = {int(v) for v in labels}
        n = sum(r.status == "drawn" and r.label in wanted for r in self.rois)
        return replace(self, n_assisted=int(n))

    @property
    def n_human(self) -> int:
        """ROIs the human had to touch: edited plus drawn."""
        return self.n_edited + self.n_drawn

    @property
    def n_corrected(self) -> int:
        """Number of ROIs in the corrected labels."""
        return self.n_accepted + self.n_edited + self.n_drawn

    def status_of(self, label: int) -> str:
        """Return the status of the corrected ROI ``label``.

        Examples
        --------
        >>> acc = account_rois(np.array([[1, 0]]), np.array([[1, 0]]))
        >>> acc.status_of(1)
        'accepted'
        """
        for rec in self.rois:
            if rec.label == label and rec.status != "deleted":
                return rec.status
        raise ValueError(f"label {label} is not a ROI of the corrected labels")

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (inverse of :meth:`from_dict`).

        Examples
        --------
        >>> acc = account_rois(np.array([[1, 0]]), np.array([[0, 1]]))
        >>> RoiAccounting.from_dict(acc.to_dict()) == acc
        True
        """
        out = asdict(self)
        out["rois"] = [asdict(r) for r in self.rois]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RoiAccounting:
        """Build an accounting from :meth:`to_dict` output; raise ValueError when malformed.

        Examples
        --------
        >>> RoiAccounting.from_dict({"n_accepted": 0, "n_edited": 0, "n_drawn": 0,
        ...                          "n_deleted": 0, "rois": []}).n_human
        0
        """
        try:
            rois = tuple(RoiRecord(**r) for r in data["rois"])
            return cls(
                n_accepted=int(data["n_accepted"]),
                n_edited=int(data["n_edited"]),
                n_drawn=int(data["n_drawn"]),
                n_deleted=int(data["n_deleted"]),
                rois=rois,
                accept_iou=float(data.get("accept_iou", ACCEPT_IOU)),
                n_assisted=int(data.get("n_assisted", 0)),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed ROI accounting record: {err}") from err


def check_labels(labels: np.ndarray, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 2-D ``(H, W)`` or 3-D ``(Z, Y, X)`` integer array, or raise a
    clear error (ROIs of a z-stack are 3-D objects; areas count voxels).

    Examples
    --------
    >>> check_labels(np.zeros((2, 3), np.uint16)).shape
    (2, 3)
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2-D (H, W) or z-stack (Z, Y, X) label image, got shape {arr.shape}"
        )
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)):
            raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (0 = background), got min {arr.min()}")
    return arr


def iou_table(
    a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every ROI of ``a`` and every ROI of ``b`` (same shape).

    Returns
    -------
    ids_a, ids_b : ndarray
        The non-zero labels of each image, sorted.
    iou : ndarray, float64, shape (len(ids_a), len(ids_b))
    area_a, area_b : ndarray of int
        Pixel count of each ROI.

    Examples
    --------
    >>> ids_a, ids_b, iou, *_ = iou_table(np.array([[1, 1]]), np.array([[1, 0]]))
    >>> float(iou[0, 0])
    0.5
    """
    ids_a, inv_a = np.unique(a.ravel(), return_inverse=True)
    ids_b, inv_b = np.unique(b.ravel(), return_inverse=True)
    na, nb = len(ids_a), len(ids_b)
    overlap = np.bincount(inv_a * nb + inv_b, minlength=na * nb).reshape(na, nb)
    area_a, area_b = overlap.sum(axis=1), overlap.sum(axis=0)
    keep_a, keep_b = ids_a != 0, ids_b != 0
    overlap = overlap[keep_a][:, keep_b]
    area_a, area_b = area_a[keep_a], area_b[keep_b]
    union = area_a[:, None] + area_b[None, :] - overlap
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)
    return ids_a[keep_a], ids_b[keep_b], iou, area_a, area_b


def match_rois(iou: np.ndarray, *, min_iou: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching maximising summed IoU; keep pairs with IoU > ``min_iou``.

    A pair at exactly ``min_iou`` is kept when ``min_iou > 0`` (so 0.5 means IoU >= 0.5), and
    pairs that do not overlap are never kept.

    Examples
    --------
    >>> rows, cols = match_rois(np.array([[0.9, 0.2], [0.8, 0.0]]))
    >>> rows.tolist(), cols.tolist()
    ([0, 1], [1, 0])
    """
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    vals = iou[rows, cols]
    good = (vals >= min_iou) & (vals > 0)
    return rows[good], cols[good]


def account_rois(
    pred_labels: np.ndarray, corrected_labels: np.ndarray, *, accept_iou: float = ACCEPT_IOU
) -> RoiAccounting:
    """Classify every ROI of a correction as accepted, edited, drawn or deleted.

    Parameters
    ----------
    pred_labels : ndarray of int, shape (H, W) or (Z, Y, X)
        The labels the model predicted (0 = background).
    corrected_labels : ndarray of int, shape (H, W) or (Z, Y, X)
        The labels after the human's correction.
    accept_iou : float, optional
        IoU at or above which a matched ROI counts as accepted (default 0.95).

    Returns
    -------
    RoiAccounting

    Examples
    --------
    >>> pred = np.array([[1, 1, 0, 2, 2, 0]])
    >>> corr = np.array([[1, 1, 0, 0, 0, 3]])
    >>> acc = account_rois(pred, corr)
    >>> acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted
    (1, 0, 1, 1)
    """
    pred = check_labels(pred_labels, name="pred_labels")
    corr = check_labels(corrected_labels, name="corrected_labels")
    if pred.shape != corr.shape:
        raise ValueError(
            f"corrected_labels shape {corr.shape} does not match pred_labels shape {pred.shape}"
        )
    if not 0.0 < accept_iou <= 1.0:
        raise ValueError(f"accept_iou must be in (0, 1], got {accept_iou}")
    ids_c, ids_p, iou, area_c, area_p = iou_table(corr, pred)
    rows, cols = match_rois(iou)
    match_of = dict(zip(rows.tolist(), cols.tolist()))
    records = []
    for i, label in enumerate(ids_c.tolist()):
        j = match_of.get(i)
        if j is None:
            records.append(RoiRecord(label, "drawn", 0, 0.0, int(area_c[i])))
            continue
        value = float(iou[i, j])
        status = "accepted" if value >= accept_iou else "edited"
        records.append(RoiRecord(label, status, int(ids_p[j]), value, int(area_c[i])))
    matched_pred = set(cols.tolist())
    for j, label in enumerate(ids_p.tolist()):
        if j not in matched_pred:
            records.append(RoiRecord(0, "deleted", label, 0.0, int(area_p[j])))
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    return RoiAccounting(
        n_accepted=counts["accepted"],
        n_edited=counts["edited"],
        n_drawn=counts["drawn"],
        n_deleted=counts["deleted"],
        rois=tuple(records),
        accept_iou=float(accept_iou),
    )
