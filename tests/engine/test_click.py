"""One click draws a missed cell: postprocess.propose_roi on flows and cell probability."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.postprocess import masks_to_flows, propose_roi
from cp2_engine.synthetic import touching_cells


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def cells():
    truth = touching_cells((128, 128), n_cells=12, diameter=20, seed=3).labels
    return truth, 5 * masks_to_flows(truth)


def test_click_restores_a_missed_cell_from_its_flows(cells):
    truth, dP = cells
    ids = np.unique(truth[truth > 0])
    for label in ids[:5]:
        cell = truth == label
        kept = np.where(cell, 0, truth)  # the model missed this one cell
        cellprob = np.where(truth > 0, 4.0, -6.0)
        cellprob[cell] = -1.5  # below the threshold: why it was missed
        ys, xs = np.nonzero(cell)
        k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        roi = propose_roi(dP, cellprob, (ys[k], xs[k]), labels=kept, diameter=20)
        assert iou(roi, cell) >= 0.9
        assert not (roi & (kept > 0)).any()  # cropped by the existing ROIs


def test_click_on_an_existing_roi_or_background_proposes_nothing(cells):
    truth, dP = cells
    cellprob = np.where(truth > 0, 4.0, -8.0)
    ys, xs = np.nonzero(truth)
    assert not propose_roi(dP, cellprob, (ys[0], xs[0]), labels=truth, diameter=20).any()
    bg = np.argwhere(truth == 0)[0]
    assert not propose_roi(dP, cellprob, tuple(bg), labels=truth, diameter=20).any()


def test_errors_name_what_was_expected(cells):
    truth, dP = cells
    with pytest.raises(ValueError, match="outside the image"):
        propose_roi(dP, np.zeros(truth.shape), (500, 3))
    with pytest.raises(ValueError, match=r"expected dP \(2, H, W\)"):
        propose_roi(dP[0], np.zeros(truth.shape), (5, 3))
