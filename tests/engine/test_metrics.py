"""Tests of cp2_engine.metrics on hand-made label images with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cp2_engine.metrics import average_precision, diameters, iou_matrix, match_masks
from cp2_engine.metrics._matching import aggregated_jaccard_index, mask_ious


def _squares(shape=(40, 40)) -> np.ndarray:
    """Three 10x10 squares labelled 1, 2, 3."""
    m = np.zeros(shape, dtype=np.uint16)
    m[0:10, 0:10] = 1
    m[0:10, 20:30] = 2
    m[25:35, 5:15] = 3
    return m


def _random_labels(rng: np.random.Generator, shape=(48, 48), n=12) -> np.ndarray:
    """Random rectangles painted in order (later ones cover earlier ones)."""
    m = np.zeros(shape, dtype=np.int32)
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 14, size=2)
        m[y : y + h, x : x + w] = k
    return m


def test_exact_counts_on_hand_made_case():
    true = _squares()
    pred = np.zeros_like(true)
    pred[0:10, 0:9] = 7  # IoU 0.9 with true 1
    pred[0:10, 20:25] = 4  # IoU 0.5 with true 2
    pred[36:40, 30:40] = 9  # touches nothing
    res = average_precision(true, pred, thresholds=(0.5, 0.75, 0.95))
    assert res.tp.tolist() == [[2, 1, 0]]
    assert res.fp.tolist() == [[1, 2, 3]]
    assert res.fn.tolist() == [[1, 2, 3]]
    np.testing.assert_allclose(res.ap, [[2 / 4, 1 / 5, 0.0]])
    m = match_masks(true, pred, threshold=0.75)
    assert m.pairs.tolist() == [[1, 7]]
    np.testing.assert_allclose(m.ious, [0.9])
    assert (m.precision, m.recall) == (pytest.approx(1 / 3), pytest.approx(1 / 3))


def test_result_shape_is_always_two_dimensional():
    true = _squares()
    single = average_precision(true, true)
    assert single.ap.shape == single.tp.shape == (1, 3)
    several = average_precision([true, true], [true, np.zeros_like(true)], thresholds=(0.5,))
    assert several.ap.shape == (2, 1)
    np.testing.assert_allclose(several.mean_ap, [0.5])


def test_non_consecutive_and_permuted_labels_give_same_score(rng):
    true = _random_labels(rng)
    pred = _random_labels(rng)
    ref = average_precision(true, pred, thresholds=(0.1, 0.3, 0.5))
    ids = np.unique(pred)[1:]
    lut = np.zeros(pred.max() + 1, dtype=np.int64)
    lut[ids] = rng.permutation(len(ids)) * 1000 + 5  # big gaps, shuffled order
    other = average_precision(true * 3, lut[pred], thresholds=(0.1, 0.3, 0.5))
    np.testing.assert_array_equal(ref.tp, other.tp)
    np.testing.assert_array_equal(ref.fp, other.fp)
    assert ref.fn.sum() + ref.tp.sum() == len(np.unique(true)[1:]) * 3


def test_labels_with_gaps_are_not_miscounted():
    true = np.zeros((10, 10), dtype=np.int64)
    true[:3, :3] = 50
    pred = true.copy()
    res = average_precision(true, pred)
    assert res.tp.tolist() == [[1, 1, 1]]
    assert res.fn.tolist() == [[0, 0, 0]]


def test_huge_label_values_use_sorting_path():
    true = np.zeros((8, 8), dtype=np.uint64)
    true[:4, :4] = 2**40
    true[4:, 4:] = 3
    res = average_precision(true, true)
    assert res.tp.tolist() == [[2, 2, 2]]


def test_hungarian_resolves_ties_at_half():
    # true 1 has IoU exactly 0.5 with both predictions: only one may match.
    true = np.array([[1, 1, 0, 2]])
    pred = np.array([[3, 4, 0, 0]])
    m = match_masks(true, pred, threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)


def test_hungarian_maximises_number_of_matches():
    # greedy by IoU would pair true 1 with pred 9 (0.47) and leave true 2 unmatched;
    # the optimum pairs 1-8 (0.30) and 2-9 (0.29).
    true = np.zeros((1, 20), dtype=np.uint8)
    true[0, :10], true[0, 10:] = 1, 2
    pred = np.zeros_like(true)
    pred[0, :3], pred[0, 3:15] = 8, 9
    ious = iou_matrix(true, pred)
    np.testing.assert_allclose(ious, [[0.3, 7 / 15], [0.0, 5 / 17]])
    m = match_masks(true, pred, threshold=0.25)
    assert m.tp == 2
    assert m.pairs.tolist() == [[1, 8], [2, 9]]


def test_empty_conventions():
    empty = np.zeros((6, 6), dtype=np.uint8)
    full = empty.copy()
    full[1:3, 1:3] = 1
    assert average_precision(empty, empty).ap.tolist() == [[1.0, 1.0, 1.0]]
    assert average_precision(full, empty).ap.tolist() == [[0.0, 0.0, 0.0]]
    assert average_precision(empty, full).fp.tolist() == [[1, 1, 1]]
    m = match_masks(full, empty)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert aggregated_jaccard_index(empty, empty) == 1.0
    assert diameters(empty)[0] == 0.0


@pytest.mark.parametrize(
    ("true", "pred", "error"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), ValueError),
        (np.zeros((4, 4), float), np.zeros((4, 4), int), TypeError),
        (np.zeros((4, 4), bool), np.zeros((4, 4), int), TypeError),
        (-np.ones((4, 4), int), np.zeros((4, 4), int), ValueError),
        (np.zeros(4, int), np.zeros(4, int), ValueError),
    ],
)
def test_bad_inputs_raise_clear_errors(true, pred, error):
    with pytest.raises(error, match="masks_"):
        average_precision(true, pred)


def test_bad_thresholds_and_lengths():
    m = _squares()
    with pytest.raises(ValueError, match="thresholds"):
        average_precision(m, m, thresholds=(0.0,))
    with pytest.raises(ValueError, match="as many images"):
        average_precision([m, m], [m])
    with pytest.raises(TypeError, match="label image"):
        average_precision("x.tif", m)


def test_mask_ious_and_aji():
    true = _squares()
    pred = np.zeros_like(true)
    pred[0:10, 0:5] = 8  # IoU 0.5 with true 1
    pred[0:10, 20:28] = 6  # IoU 0.8 with true 2
    r = mask_ious(true, pred)
    assert r.labels.tolist() == [1, 2, 3]
    np.testing.assert_allclose(r.iou, [0.5, 0.8, 0.0])
    assert r.matched.tolist() == [8, 6, 0]
    # Kumar AJI: (50 + 80) / (100 + 100 + 100 unmatched true 3)
    assert aggregated_jaccard_index(true, pred) == pytest.approx(130 / 300)
    pred[36:40, 36:40] = 9  # an unused prediction enlarges the union
    assert aggregated_jaccard_index(true, pred) == pytest.approx(130 / 316)


def test_diameters_follow_equivalent_circle_convention():
    m = np.zeros((30, 30), dtype=np.uint16)
    m[:10, :10] = 4  # area 100
    m[20:24, 20:24] = 9  # area 16
    m[12:18, 0:6] = 2  # area 36
    md, per = diameters(m)
    np.testing.assert_allclose(per, 2 * np.sqrt(np.array([36, 100, 16]) / np.pi))
    assert md == pytest.approx(2 * np.sqrt(36 / np.pi))


def test_results_are_read_only():
    res = average_precision(_squares(), _squares())
    with pytest.raises(ValueError, match="read-only"):
        res.ap[0, 0] = 0.0


def test_three_dimensional_labels_are_accepted(rng):
    vol = np.stack([_random_labels(rng, shape=(20, 20), n=4) for _ in range(3)])
    assert average_precision(vol, vol).ap.min() == 1.0


label_images = st.integers(min_value=0, max_value=2**31 - 1).map(
    lambda seed: _random_labels(np.random.default_rng(seed), shape=(32, 32), n=8)
)


@settings(max_examples=25, deadline=None)
@given(true=label_images, pred=label_images, seed=st.integers(0, 1000))
def test_properties(true, pred, seed):
    thresholds = (0.3, 0.5, 0.75, 0.9)
    own = average_precision(true, true, thresholds=thresholds)
    if true.any():
        assert own.ap.min() == 1.0
    res = average_precision(true, pred, thresholds=thresholds)
    assert np.all((res.ap >= 0) & (res.ap <= 1))
    assert np.all(np.diff(res.tp[0]) <= 0)  # stricter thresholds never match more
    ids = np.unique(pred)
    perm = np.zeros(pred.max() + 1, dtype=np.int64)
    perm[ids[1:]] = np.random.default_rng(seed).permutation(len(ids) - 1) + 1
    again = average_precision(true, perm[pred], thresholds=thresholds)
    np.testing.assert_array_equal(res.ap, again.ap)
