"""3-D flows <-> masks, hole filling and plane stitching."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.metrics import average_precision
from cp2_engine.postprocess import (
    compute_masks_3d,
    consecutive_labels,
    fill_holes_and_remove_small_masks_3d,
    masks_to_flows,
    stitch_planes,
)
from cp2_engine.postprocess._dynamics3d import follow_flows_3d, get_masks_3d
from cp2_engine.postprocess._flows3d import labels_to_flows_3d, masks_to_flows_3d
from cp2_engine.synthetic import touching_cells_3d


@pytest.fixture(scope="module")
def stack():
    return touching_cells_3d((16, 80, 80), diameter=14, seed=3)


def test_flows_are_unit_inside_and_zero_outside(stack):
    flows = masks_to_flows_3d(stack.labels)
    norm = np.sqrt((flows**2).sum(0))
    inside = stack.labels > 0
    assert np.all(norm[~inside] == 0)
    assert np.mean(np.abs(norm[inside] - 1) < 1e-5) > 0.99


def test_flows_point_to_the_centre_of_a_ball():
    zz, yy, xx = np.indices((15, 15, 15)) - 7
    ball = (zz**2 + yy**2 + xx**2 <= 36).astype(np.uint8)
    flows = masks_to_flows_3d(ball)
    pos = np.stack([zz, yy, xx]).astype(float)
    cos = -(flows * pos).sum(0) / np.maximum(np.sqrt((pos**2).sum(0)), 1e-9)
    assert cos[(ball > 0) & ((pos**2).sum(0) > 4)].min() > 0.9


def test_flows_ignore_label_values_and_neighbours():
    a = np.zeros((6, 10, 10), np.int32)
    a[1:5, 1:5, 1:5] = 3
    a[1:5, 5:9, 1:5] = 900
    b = np.where(a == 3, 1, np.where(a == 900, 2, 0))
    np.testing.assert_array_equal(masks_to_flows_3d(a), masks_to_flows_3d(b))
    alone = np.where(a == 3, 3, 0)
    np.testing.assert_array_equal(
        masks_to_flows_3d(a)[:, a == 3], masks_to_flows_3d(alone)[:, a == 3]
    )


def test_thin_slab_flows_match_2d_in_plane():
    lab2 = np.zeros((20, 20), np.int32)
    lab2[3:15, 4:17] = 1
    vol = np.repeat(lab2[None], 1, axis=0)
    flows = masks_to_flows_3d(vol)
    assert np.all(flows[0] == 0)
    flat = masks_to_flows(lab2)
    inside = lab2 > 0
    cos = (flows[1:, 0] * flat).sum(0)[inside]
    assert cos.mean() > 0.97


def test_labels_to_flows_3d(stack):
    out = labels_to_flows_3d(stack.labels)
    assert out.shape == (5, *stack.labels.shape)
    np.testing.assert_array_equal(out[1], stack.labels > 0)


def test_perfect_flows_recover_the_labels(stack):
    dP = 5 * masks_to_flows_3d(stack.labels)
    cellprob = np.where(stack.labels > 0, 4.0, -4.0)
    masks = compute_masks_3d(dP, cellprob)
    assert average_precision(stack.labels, masks).ap[0, 0] == 1.0


def test_follow_flows_3d_moves_and_clamps():
    dP = np.zeros((3, 4, 5, 6), np.float32)
    dP[0] = 0.5
    dP[2] = -1.0
    mask = np.zeros((4, 5, 6), bool)
    mask[0, 2, 5] = True
    p = follow_flows_3d(dP, mask, niter=20)
    np.testing.assert_allclose(p[:, 0], [3.0, 2.0, 0.0])


def test_get_masks_3d_drops_huge_clusters():
    mask = np.ones((6, 10, 10), bool)
    p = np.full((3, mask.sum()), 3.0, np.float32)
    assert get_masks_3d(p, mask).max() == 0
    assert get_masks_3d(p, mask, max_size_fraction=1.0).max() == 1


def test_fill_holes_3d_fills_only_closed_voids():
    m = np.zeros((7, 9, 9), np.int32)
    m[1:6, 1:8, 1:8] = 4
    m[3, 4, 4] = 0  # closed void
    m[1:6, 4, 4] = 0  # a tunnel open at both ends is not a 3-D hole
    m[3, 4, 4] = 0
    out = fill_holes_and_remove_small_masks_3d(m, min_size=5)
    assert out[3, 4, 4] == 0
    m2 = np.zeros((7, 9, 9), np.int32)
    m2[1:6, 1:8, 1:8] = 4
    m2[2:5, 3:6, 3:6] = 0
    m2[3, 4, 4] = 9  # another mask inside the void: never overwritten, the void stays
    out2 = fill_holes_and_remove_small_masks_3d(m2, min_size=1)
    assert out2[2, 3, 3] == 0 and out2[3, 4, 4] not in (0, out2[1, 1, 1])
    m2[3, 4, 4] = 0
    assert np.all(fill_holes_and_remove_small_masks_3d(m2, min_size=1)[1:6, 1:8, 1:8] == 1)
    small = np.zeros((4, 4, 4), np.int32)
    small[1, 1, 1] = 1
    assert fill_holes_and_remove_small_masks_3d(small, min_size=2).max() == 0


def _fill_holes_reference(masks: np.ndarray) -> np.ndarray:
    """Whole-volume definition: a background component off the border whose face neighbours
    all carry one label takes that label."""
    from scipy import ndimage as ndi

    out = masks.copy()
    comp, n = ndi.label(masks == 0)
    for c in range(1, n + 1):
        region = comp == c
        zs, ys, xs = np.nonzero(region)
        if min(zs.min(), ys.min(), xs.min()) == 0 or any(
            a.max() == s - 1 for a, s in zip((zs, ys, xs), masks.shape)
        ):
            continue
        ring = ndi.binary_dilation(region) & ~region
        values = np.unique(masks[ring])
        if values.size == 1 and values[0] > 0:
            out[region] = values[0]
    return out


def test_fill_holes_3d_in_boxes_equals_the_whole_volume_definition():
    rng = np.random.default_rng(3)
    n_filled = 0
    for _ in range(60):
        shape = tuple(int(v) for v in rng.integers(4, 16, 3))
        masks = np.zeros(shape, np.int32)
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        for k in range(int(rng.integers(1, 6))):
            c = [rng.integers(0, s) for s in shape]
            r = int(rng.integers(2, 6))
            d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
            masks[(d2 <= r * r) & (d2 >= (r - 1) ** 2)] = k + 1  # hollow shells
        masks[rng.random(shape) < 0.03] = 0
        expected, _ = consecutive_labels(_fill_holes_reference(masks))
        got = fill_holes_and_remove_small_masks_3d(masks, min_size=0)
        np.testing.assert_array_equal(got, expected)
        n_filled += int((got > 0).sum() > (masks > 0).sum())
    assert n_filled >= 10  # the cases exercise filling, not only empty volumes


def test_stitch_planes_links_by_iou():
    from cp2_engine.synthetic import touching_cells

    a = touching_cells((64, 64), diameter=14, seed=1).labels.astype(np.int32)
    b = touching_cells((64, 64), diameter=14, seed=2).labels.astype(np.int32)
    truth = np.zeros((12, 64, 64), np.int32)
    truth[:5] = a
    truth[6:] = np.where(b > 0, b + a.max(), 0)  # plane 5 empty: two separate layers
    planes = np.zeros_like(truth)
    for z in range(truth.shape[0]):  # unrelated labels per plane
        ids = np.unique(truth[z])
        lut = np.zeros(int(truth.max()) + 1, np.int32)
        lut[ids[ids > 0]] = np.random.default_rng(z).permutation(len(ids[ids > 0])) + 1
        planes[z] = lut[truth[z]]
    out = stitch_planes(planes, stitch_threshold=0.5)
    assert average_precision(truth, out).ap[0, 0] == 1.0


def test_stitch_planes_empty_planes_get_new_labels():
    m = np.zeros((4, 5, 5), np.int32)
    m[0, 1:3, 1:3] = 1
    m[2, 1:3, 1:3] = 1  # plane 1 is empty: a new object, not label 1 again
    out = stitch_planes(m, stitch_threshold=0.5)
    assert out[0, 1, 1] != out[2, 1, 1] and out[2, 1, 1] > 0
    with pytest.raises(ValueError, match="stitch_threshold"):
        stitch_planes(m, stitch_threshold=0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="3-D"):
        masks_to_flows_3d(np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="dP"):
        compute_masks_3d(np.zeros((2, 3, 4, 5)), np.zeros((3, 4, 5)))
