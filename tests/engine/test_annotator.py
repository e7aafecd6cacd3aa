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
    assert SimulatedAnnotator(iou_threshold=0.5).correct(truth, pred).n_kept == 1
    c = SimulatedAnnotator(iou_threshold=0.7).correct(truth, pred)
    assert (c.n_kept, c.n_drawn, c.n_deleted) == (0, 4, 1)


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
