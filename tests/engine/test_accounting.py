"""ROI accounting on hand-made cases: accepted, edited, drawn, deleted."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.hitl import RoiAccounting, account_rois


def _square(labels: np.ndarray, label: int, y: int, x: int, size: int = 4) -> None:
    labels[y : y + size, x : x + size] = label


def _pred() -> np.ndarray:
    pred = np.zeros((20, 20), np.uint16)
    _square(pred, 1, 0, 0)
    _square(pred, 2, 0, 10)
    _square(pred, 3, 10, 0)
    _square(pred, 4, 10, 10)
    return pred


def test_identical_labels_are_all_accepted():
    pred = _pred()
    acc = account_rois(pred, pred)
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (4, 0, 0, 0)
    assert acc.n_human == 0
    assert all(r.iou == 1.0 for r in acc.rois)


def test_relabelled_roi_is_still_accepted():
    pred = _pred()
    corr = pred.copy()
    corr[pred == 1] = 7
    acc = account_rois(pred, corr)
    assert acc.n_accepted == 4
    assert acc.status_of(7) == "accepted"
    assert next(r for r in acc.rois if r.label == 7).pred_label == 1


def test_mixed_correction_counts_and_table():
    pred = _pred()
    corr = pred.copy()
    corr[pred == 2] = 0  # deleted
    corr[0:4, 4:6] = 1  # ROI 1 grown from 16 to 24 px: IoU 16/24 -> edited
    _square(corr, 9, 16, 16)  # new, no overlap -> drawn
    acc = account_rois(pred, corr)
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (2, 1, 1, 1)
    assert acc.status_of(1) == "edited"
    assert acc.status_of(9) == "drawn"
    edited = next(r for r in acc.rois if r.label == 1)
    assert edited.iou == pytest.approx(16 / 24)
    assert edited.area == 24
    deleted = [r for r in acc.rois if r.status == "deleted"]
    assert [r.pred_label for r in deleted] == [2]
    assert deleted[0].area == 16


def test_small_change_above_threshold_is_accepted():
    pred = np.zeros((30, 30), np.uint16)
    pred[0:20, 0:20] = 1
    corr = pred.copy()
    corr[0, 0:10] = 0  # 390 / 400 = 0.975
    assert account_rois(pred, corr).n_accepted == 1
    assert account_rois(pred, corr, accept_iou=0.99).n_edited == 1


def test_split_and_merge():
    pred = np.zeros((10, 20), np.uint16)
    pred[0:4, 0:8] = 1
    pred[6:10, 0:4] = 2
    pred[6:10, 4:8] = 3
    corr = np.zeros_like(pred)
    corr[0:4, 0:4] = 1  # split of 1 ...
    corr[0:4, 4:8] = 2  # ... into two ROIs
    corr[6:10, 0:8] = 3  # merge of 2 and 3
    acc = account_rois(pred, corr)
    # split: one edited + one drawn; merge: one edited + one deleted
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (0, 2, 1, 1)
    assert acc.n_accepted + acc.n_edited + acc.n_drawn == 3
    assert acc.n_accepted + acc.n_edited + acc.n_deleted == 3


def test_empty_inputs():
    empty = np.zeros((5, 5), np.uint16)
    acc = account_rois(empty, empty)
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (0, 0, 0, 0)
    acc = account_rois(_pred(), np.zeros((20, 20), np.int32))
    assert acc.n_deleted == 4


def test_round_trip_through_dict():
    pred = _pred()
    corr = pred.copy()
    corr[pred == 3] = 0
    acc = account_rois(pred, corr)
    again = RoiAccounting.from_dict(acc.to_dict())
    assert again == acc
    with pytest.raises(ValueError, match="malformed"):
        RoiAccounting.from_dict({"n_accepted": 1})


def test_bad_input_errors():
    pred = _pred()
    with pytest.raises(ValueError, match="does not match"):
        account_rois(pred, pred[:10])
    with pytest.raises(ValueError, match="2-D"):
        account_rois(pred[None, None], pred[None, None])
    with pytest.raises(TypeError, match="integer"):
        account_rois(pred, pred + 0.5)
    with pytest.raises(ValueError, match="accept_iou"):
        account_rois(pred, pred, accept_iou=0)
    with pytest.raises(ValueError, match="not a ROI"):
        account_rois(pred, pred).status_of(99)


def test_random_labels_invariants():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 6, size=(32, 32))
    corr = rng.integers(0, 8, size=(32, 32))
    acc = account_rois(pred, corr)
    assert acc.n_accepted + acc.n_edited + acc.n_drawn == len(np.unique(corr[corr > 0]))
    assert acc.n_accepted + acc.n_edited + acc.n_deleted == len(np.unique(pred[pred > 0]))


def test_zstack_rois_are_3d_objects():
    pred = np.zeros((4, 12, 12), np.uint16)
    pred[0:3, 1:5, 1:5] = 1
    pred[1:4, 6:11, 6:11] = 2
    corr = pred.copy()
    corr[corr == 2] = 0
    corr[3, 0:3, 0:3] = 7
    acc = account_rois(pred, corr)
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn, acc.n_deleted) == (1, 0, 1, 1)
    assert acc.rois[0].area == 3 * 4 * 4  # voxels
