"""Tests of flows → masks: round trip, flow-error QC, hole filling, dtypes and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from cp2_engine.postprocess import (
    compute_masks,
    fill_holes_and_remove_small_masks,
    flow_error,
    masks_to_flows,
    remove_bad_flow_masks,
)
from cp2_engine.synthetic import touching_cells


def matched_ap(truth: np.ndarray, pred: np.ndarray, threshold: float) -> float:
    """TP / (TP + FP + FN) with one-to-one IoU matching (Hungarian)."""
    n_t, n_p = int(truth.max()), int(pred.max())
    if n_t == 0 or n_p == 0:
        return float(n_t == n_p)
    overlap = np.bincount(
        truth.ravel().astype(np.int64) * (n_p + 1) + pred.ravel(), minlength=(n_t + 1) * (n_p + 1)
    ).reshape(n_t + 1, n_p + 1)
    area_t, area_p = overlap.sum(1, keepdims=True), overlap.sum(0, keepdims=True)
    iou = (overlap / np.maximum(area_t + area_p - overlap, 1))[1:, 1:]
    rows, cols = linear_sum_assignment(-iou)
    tp = int((iou[rows, cols] >= threshold).sum())
    return tp / (n_t + n_p - tp)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return touching_cells((160, 160), diameter=24, seed=11).labels


def _ideal_outputs(labels):
    return 5 * masks_to_flows(labels), np.where(labels > 0, 5.0, -5.0).astype(np.float32)


def test_round_trip_recovers_touching_cells(truth):
    dP, cellprob = _ideal_outputs(truth)
    masks = compute_masks(dP, cellprob)
    assert masks.dtype == np.uint16
    assert masks.max() > 10
    assert matched_ap(truth, masks, 0.9) >= 0.99


def test_round_trip_with_noisy_flows(truth, rng):
    dP, cellprob = _ideal_outputs(truth)
    dP = dP + rng.normal(0, 0.5, size=dP.shape).astype(np.float32)
    masks = compute_masks(dP, cellprob)
    assert matched_ap(truth, masks, 0.5) >= 0.95


def test_empty_foreground_gives_empty_masks():
    masks = compute_masks(np.zeros((2, 20, 30), np.float32), np.full((20, 30), -3.0))
    assert masks.shape == (20, 30)
    assert masks.dtype == np.uint16
    assert not masks.any()


def test_flow_threshold_drops_masks_with_wrong_flows(truth, rng):
    dP, cellprob = _ideal_outputs(truth)
    bad = 3
    sel = truth == bad
    angle = rng.uniform(0, 2 * np.pi, size=sel.sum())
    dP[0][sel], dP[1][sel] = 5 * np.sin(angle), 5 * np.cos(angle)
    masks_qc = compute_masks(dP, cellprob, flow_threshold=0.4)
    masks_no_qc = compute_masks(dP, cellprob, flow_threshold=0)
    assert np.mean(masks_qc[sel] > 0) < 0.5
    assert np.mean(masks_no_qc[sel] > 0) > 0.5
    others = (truth > 0) & ~sel
    assert np.mean(masks_qc[others] > 0) > 0.95


def test_flow_error_values(truth):
    dP, _ = _ideal_outputs(truth)
    sparse = np.where(truth > 0, truth.astype(np.int32) + 5, 0)
    err = flow_error(sparse, dP)
    assert err.shape == (int(sparse.max()),)
    assert np.all(np.isnan(err[:5]))
    assert np.nanmax(err) < 1e-10
    flipped = flow_error(sparse, -dP)  # opposite unit vectors: squared error 4 everywhere
    assert np.nanmin(flipped) > 3.9


def test_remove_bad_flow_masks_keeps_good_and_copies(truth):
    dP, _ = _ideal_outputs(truth)
    dP[:, truth == 1] *= -1
    out = remove_bad_flow_masks(truth, dP, threshold=0.4)
    assert not np.any(out == 1)
    np.testing.assert_array_equal(out[truth > 1], truth[truth > 1])
    assert np.any(truth == 1), "the input must not be modified"
    np.testing.assert_array_equal(remove_bad_flow_masks(truth, dP, threshold=None), truth)


def test_fill_holes_keeps_enclosed_labels():
    masks = np.zeros((20, 20), np.int32)
    masks[2:12, 2:12] = 5
    masks[4:6, 4:6] = 0  # a hole: filled
    masks[7:10, 7:10] = 9  # another mask inside: kept
    masks[14:18, 14:19] = 0
    masks[15:17, 15:18] = 2  # a small mask
    out = fill_holes_and_remove_small_masks(masks, min_size=7)
    assert out.dtype == np.uint16
    assert out.max() == 2
    assert np.all(out[4:6, 4:6] == out[3, 3])
    assert np.all(out[7:10, 7:10] != out[3, 3]) and np.all(out[7:10, 7:10] > 0)
    assert np.all(out[15:17, 15:18] == 0)


def test_hole_touching_two_masks_or_border_is_not_filled():
    masks = np.zeros((10, 10), np.int32)
    masks[:, :5] = 1
    masks[:, 5:] = 2
    masks[4:6, 4:6] = 0  # background between two masks
    masks[0, 2] = 0  # notch on the image border
    out = fill_holes_and_remove_small_masks(masks, min_size=0)
    assert np.all(out[4:6, 4:6] == 0)
    assert out[0, 2] == 0


def test_min_size_counts_before_filling_and_renumbers():
    masks = np.zeros((12, 12), np.int32)
    masks[1:5, 1:5] = 40  # 16 px with a 1 px hole: 15 before filling
    masks[2, 2] = 0
    masks[7:11, 7:11] = 3  # 16 px
    out = fill_holes_and_remove_small_masks(masks, min_size=16)
    assert out.max() == 1
    assert np.all(out[7:11, 7:11] == 1)


def test_uint32_output_above_65535_masks():
    masks = np.arange(1, 300 * 300 + 1, dtype=np.int64).reshape(300, 300)
    out = fill_holes_and_remove_small_masks(masks, min_size=0)
    assert out.dtype == np.uint32
    assert out.max() == 90000


@pytest.mark.parametrize(
    ("dP", "cellprob", "error", "match"),
    [
        (np.zeros((3, 8, 8)), np.zeros((8, 8)), ValueError, r"\(2, H, W\)"),
        (np.zeros((2, 8, 8)), np.zeros((8, 9)), ValueError, "cellprob must have shape"),
        (np.full((2, 8, 8), np.nan), np.zeros((8, 8)), ValueError, "NaN"),
        (np.zeros((2, 8, 8)), np.full((8, 8), np.inf), ValueError, "NaN or inf"),
        (np.zeros((2, 8, 8)), np.zeros((8, 8), dtype=object), TypeError, "numeric"),
    ],
)
def test_compute_masks_rejects_bad_input(dP, cellprob, error, match):
    with pytest.raises(error, match=match):
        compute_masks(dP, cellprob)
