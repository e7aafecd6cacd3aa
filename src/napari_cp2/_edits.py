"""Pure label edits used by the correction widget, and a small undo history.

Each edit takes a label image and returns a new one (the input is never modified), so the widget
can keep the previous state for undo and napari's layer gets a fresh array.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["EditHistory", "add_rois", "delete_roi", "fresh_id", "merge_rois", "relabel_roi"]


def _check_roi(labels: np.ndarray, label: int) -> None:
    if label <= 0 or not np.any(labels == label):
        raise ValueError(f"there is no ROI {label} in the labels")


def fresh_id(labels: np.ndarray) -> int:
    """Return an id not used in ``labels`` (max + 1).

    Examples
    --------
    >>> fresh_id(np.array([[0, 3]]))
    4
    """
    return int(np.max(labels, initial=0)) + 1


def delete_roi(labels: np.ndarray, label: int) -> np.ndarray:
    """Return ``labels`` without ROI ``label``.

    Examples
    --------
    >>> delete_roi(np.array([[1, 2]]), 2).tolist()
    [[1, 0]]
    """
    _check_roi(labels, label)
    out = labels.copy()
    out[out == label] = 0
    return out


def merge_rois(labels: np.ndarray, keep: int, other: int) -> np.ndarray:
    """Merge ROI ``other`` into ROI ``keep``, closing the background gap between them.

    Works on 2-D and 3-D (z-stack) labels alike.

    Examples
    --------
    >>> labels = np.zeros((3, 5), int)
    >>> labels[1, 1], labels[1, 3] = 1, 2
    >>> merge_rois(labels, 1, 2)[1].tolist()
    [0, 1, 1, 1, 0]
    """
    _check_roi(labels, keep)
    _check_roi(labels, other)
    if keep == other:
        raise ValueError(f"cannot merge ROI {keep} with itself")
    out = labels.copy()
    out[out == other] = keep
    union = out == keep
    structure = np.ones((3,) * union.ndim, bool)  # 3x3, or 3x3x3 for z-stack labels
    closed = ndi.binary_closing(union, structure=structure, border_value=0)
    out[closed & (out == 0)] = keep
    return out


def relabel_roi(labels: np.ndarray, label: int) -> tuple[np.ndarray, int]:
    """Give ROI ``label`` a fresh id; return the new labels and the id.

    Examples
    --------
    >>> relabel_roi(np.array([[1, 2]]), 1)[0].tolist()
    [[3, 2]]
    """
    _check_roi(labels, label)
    new = fresh_id(labels)
    out = labels.copy()
    if new > np.iinfo(out.dtype).max:
        out = out.astype(np.uint32)
    out[labels == label] = new
    return out, new


def add_rois(labels: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Add each boolean mask of ``masks`` (N, *labels.shape) as a new ROI on background pixels.

    Existing ROIs are never overwritten (a new ROI is cropped by them, as in Cellpose's GUI).
    Masks that end up empty are skipped.

    Examples
    --------
    >>> m = np.zeros((1, 1, 3), bool); m[0, 0, :2] = True
    >>> out, ids = add_rois(np.array([[1, 0, 0]], np.uint16), m)
    >>> out.tolist(), ids
    ([[1, 2, 0]], [2])
    """
    out = labels.copy()
    ids = []
    for mask in np.asarray(masks, dtype=bool):
        free = mask & (out == 0)
        if not free.any():
            continue
        new = fresh_id(out)
        if new > np.iinfo(out.dtype).max:
            out = out.astype(np.uint32)
        out[free] = new
        ids.append(new)
    return out, ids


class EditHistory:
    """Bounded undo stack of label images per layer name.

    Examples
    --------
    >>> h = EditHistory(limit=2)
    >>> h.push("m", np.zeros(2, int)); h.push("m", np.ones(2, int))
    >>> h.pop("m").tolist()
    [1, 1]
    """

    def __init__(self, *, limit: int = 20) -> None:
        self.limit = int(limit)
        self._stacks: dict[str, list[np.ndarray]] = {}

    def push(self, name: str, labels: np.ndarray) -> None:
        """Remember ``labels`` (a copy) as the state before an edit of layer ``name``."""
        stack = self._stacks.setdefault(name, [])
        stack.append(np.array(labels, copy=True))
        del stack[: -self.limit]

    def pop(self, name: str) -> np.ndarray | None:
        """Return the last remembered state of ``name``, or None when there is none."""
        stack = self._stacks.get(name)
        return stack.pop() if stack else None

    def __len__(self) -> int:
        return sum(len(s) for s in self._stacks.values())
