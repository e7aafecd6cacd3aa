"""The simulated annotator: exact counts on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.hitl import SimulatedAnnotator


def _truth() -> np.ndarray:
    truth = np.zeros((20, 30), np.uint16)
    truth[0:6, 0:6] = 1
    truth[0:6, 10:16] = 2
    truth[10:16, 0:6] = 3
    truth[10:16, 10:16] = 4
    return truth


def test_perfect_prediction_is_kept():
    truth = _truth()
    c = SimulatedAnnotator().correct(truth, truth)
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (4, 0, 0)
    np.testing.assert_array_equal(c.labels, truth)


def test_empty_prediction_draws_everything():
    truth = _truth()
    c = SimulatedAnnotator().correct(truth, np.zeros_like(truth))
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (0, 4, 0)
    np.testing.assert_array_equal(c.labels > 0, truth > 0)


def test_mixed_prediction_counts_and_shapes():
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[0:6, 1:6] = 5  # IoU 30/36 with true 1 -> kept with the predicted shape
    pred[0:3, 10:13] = 6  # IoU 9/36 with true 2 -> deleted, true 2 drawn
    pred[15:20, 20:25] = 7  # false positive -> deleted
    # true 3 and 4 missed -> drawn
    c = SimulatedAnnotator().correct(truth, pred)
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (1, 3, 2)
    assert c.labels.dtype == np.uint16
    np.testing.assert_array_equal(c.labels == 1, pred == 5)  # kept shape is the predicted one
    for true_id in (2, 3, 4):
        drawn = np.unique(c.labels[truth == true_id])
        assert len(drawn) == 1 and drawn[0] > 1
    assert np.all(c.labels[15:20, 20:25] == 0)
    assert sorted(np.unique(c.labels).tolist()) == [0, 1, 2, 3, 4]


def test_threshold_changes_the_decision():
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[0:6, 0:4] = 1  # IoU 24/36 = 0.667
    assert SimulatedAnnotator(iou_threshold=0.5, keep_iou=0.5).correct(truth, pred).n_kept == 1
    c = SimulatedAnnotator(iou_threshold=0.7).correct(truth, pred)
    assert (c.n_kept, c.n_drawn, c.n_deleted, c.n_fixed) == (0, 4, 1, 0)


def test_keep_fix_draw_delete_exact_counts():
    # true ROIs 1..4 are 6x6 squares; predictions: exact (kept), 5 of 6 columns (IoU 0.833:
    # kept at 0.75 and 0.8, fixed at 0.9), 4 of 6 columns (IoU 0.667: fixed at 0.75), a false
    # positive (deleted); true 4 missed (drawn)
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[0:6, 0:6] = 1
    pred[0:6, 10:15] = 2
    pred[10:16, 0:4] = 3
    pred[15:20, 20:25] = 4
    expected = {  # keep_iou: (kept, fixed, drawn, deleted)
        0.5: (3, 0, 1, 1),
        0.75: (2, 1, 1, 1),
        0.8: (2, 1, 1, 1),
        0.9: (1, 2, 1, 1),
    }
    for keep_iou, counts in expected.items():
        c = SimulatedAnnotator(keep_iou=keep_iou).correct(truth, pred)
        assert (c.n_kept, c.n_fixed, c.n_drawn, c.n_deleted) == counts, keep_iou
        assert c.n_human == counts[1] + counts[2]
    c = SimulatedAnnotator().correct(truth, pred)  # default 0.75
    # kept ROIs keep their predicted shape; the fixed ROI and the missed one are the true ones
    np.testing.assert_array_equal(c.labels == 1, pred == 1)
    np.testing.assert_array_equal(c.labels == 2, pred == 2)
    for true_id in (3, 4):
        np.testing.assert_array_equal(c.labels[truth == true_id], c.labels[truth == true_id][0])
        assert np.count_nonzero(c.labels == c.labels[truth == true_id][0]) == 36
    assert np.all(c.labels[15:20, 20:25] == 0)


def test_lenient_annotator_is_the_old_rule():
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[0:6, 0:4] = 1  # IoU 0.667
    lenient = SimulatedAnnotator(keep_iou=None).correct(truth, pred)
    assert lenient.n_kept == 1 and lenient.n_fixed == 0
    assert SimulatedAnnotator(keep_iou=None).keep_iou == 0.5


def test_fixed_roi_counts_as_human_in_the_project_accounting():
    from cp2_engine.hitl import account_rois

    truth = _truth()
    pred = np.zeros_like(truth)
    pred[0:6, 0:6] = 1  # kept
    pred[10:16, 0:4] = 3  # fixed at 0.75
    c = SimulatedAnnotator().correct(truth, pred)
    acc = account_rois(pred, c.labels)
    assert (acc.n_accepted, acc.n_edited, acc.n_drawn) == (1, 1, 2)
    assert acc.n_human == c.n_human == 3


def test_keep_iou_below_the_match_threshold_is_an_error():
    with pytest.raises(ValueError, match="keep_iou"):
        SimulatedAnnotator(iou_threshold=0.6, keep_iou=0.5)


def test_drawn_roi_never_overwrites_kept_roi():
    truth = np.zeros((10, 20), np.uint16)
    truth[0:10, 0:10] = 1
    truth[0:10, 10:14] = 2
    pred = np.zeros_like(truth)
    pred[0:10, 0:12] = 1  # IoU 100/120 with true 1: kept, and covers 2 columns of true 2
    c = SimulatedAnnotator().correct(truth, pred)
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (1, 1, 0)
    np.testing.assert_array_equal(c.labels == 1, pred == 1)
    assert np.count_nonzero(c.labels == 2) == 20  # 40 true pixels minus 20 held by the kept ROI


def test_fully_covered_missed_roi_is_not_counted():
    truth = np.zeros((10, 10), np.uint16)
    truth[0:10, 0:8] = 1
    truth[0:2, 8:10] = 2
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 1  # IoU 80/100 with true 1, swallows true 2 completely
    c = SimulatedAnnotator().correct(truth, pred)
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (1, 0, 0)
    c2 = SimulatedAnnotator(min_drawn_pixels=1).correct(truth, np.zeros_like(truth))
    assert c2.n_drawn == 2


def test_random_invariants():
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 10, size=(40, 40))
    pred = rng.integers(0, 6, size=(40, 40))
    c = SimulatedAnnotator().correct(truth, pred)
    n_pred = len(np.unique(pred[pred > 0]))
    assert c.n_kept + c.n_deleted == n_pred
    assert len(np.unique(c.labels[c.labels > 0])) == c.n_kept + c.n_drawn


def test_bad_input():
    truth = _truth()
    with pytest.raises(ValueError, match="does not match"):
        SimulatedAnnotator().correct(truth, truth[:5])
    with pytest.raises(ValueError, match="iou_threshold"):
        SimulatedAnnotator(iou_threshold=1.5)
    with pytest.raises(TypeError, match="integer"):
        SimulatedAnnotator().correct(truth, np.full(truth.shape, np.nan))
