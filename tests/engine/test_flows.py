"""Tests of masks → flows (heat diffusion): CPU/torch agreement, no leakage, label handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cp2_engine.postprocess import consecutive_labels, labels_to_flows, masks_to_flows
from cp2_engine.postprocess._flows import mask_centres
from cp2_engine.synthetic import disks, touching_cells


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return touching_cells((128, 128), diameter=22, seed=3).labels


def _torch_cpu(masks):
    return masks_to_flows(masks, device=torch.device("cpu"))


def test_shape_dtype_and_unit_norm(cells):
    flows = masks_to_flows(cells)
    assert flows.shape == (2, *cells.shape)
    assert flows.dtype == np.float32
    norm = np.hypot(flows[0], flows[1])
    assert np.all(norm[cells == 0] == 0)
    inside = norm[cells > 0]
    # every pixel is a unit vector except at most the source pixel of each mask
    assert np.sum(np.abs(inside - 1) > 1e-5) <= cells.max()


def test_hand_computed_bar():
    masks = np.zeros((3, 5), np.int32)
    masks[1, 1:4] = 4
    flows = masks_to_flows(masks)
    expected_dx = np.zeros((3, 5), np.float32)
    expected_dx[1, 1], expected_dx[1, 3] = 1.0, -1.0  # ends point at the middle; middle is 0
    np.testing.assert_array_equal(flows[1], expected_dx)
    np.testing.assert_array_equal(flows[0], np.zeros((3, 5), np.float32))


def test_flows_point_towards_the_centre():
    sample = disks((96, 96), n_disks=4, radius=9, seed=2)
    flows = masks_to_flows(sample.labels)
    yy, xx = np.indices(sample.labels.shape)
    for k, (cy, cx) in enumerate(sample.centers, start=1):
        sel = sample.labels == k
        far = sel & (np.hypot(yy - cy, xx - cx) > 2)
        dot = flows[0][far] * (cy - yy[far]) + flows[1][far] * (cx - xx[far])
        assert np.all(dot > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_and_torch_paths_agree(seed):
    labels = touching_cells((96, 96), diameter=18, seed=seed).labels
    np.testing.assert_allclose(masks_to_flows(labels), _torch_cpu(labels), atol=1e-4, rtol=0)


def test_cpu_and_torch_agree_on_symmetric_disks():
    labels = disks((64, 64), n_disks=3, radius=7, seed=5).labels
    np.testing.assert_allclose(masks_to_flows(labels), _torch_cpu(labels), atol=1e-4, rtol=0)


@pytest.mark.parametrize("path", ["numba", "torch"])
def test_no_leakage_between_touching_cells(cells, path):
    compute = masks_to_flows if path == "numba" else _torch_cpu
    full = compute(cells)
    # remove every neighbour of one cell: its own flows must not change at all
    pairs = np.concatenate(
        [
            np.stack([cells[:-1].ravel(), cells[1:].ravel()]),
            np.stack([cells[:, :-1].ravel(), cells[:, 1:].ravel()]),
        ],
        axis=1,
    )
    pairs = pairs[:, (pairs[0] != pairs[1]) & (pairs > 0).all(0)]
    assert pairs.size, "the test image should have touching cells"
    target = int(np.bincount(pairs.ravel()).argmax())
    neighbours = set(pairs[1][pairs[0] == target]) | set(pairs[0][pairs[1] == target])
    alone = np.where(np.isin(cells, list(neighbours)), 0, cells)
    sel = cells == target
    np.testing.assert_array_equal(compute(alone)[:, sel], full[:, sel])


def test_non_consecutive_labels_give_the_same_flows(cells):
    sparse = np.where(cells > 0, cells.astype(np.int64) * 1000 + 7, 0)
    np.testing.assert_array_equal(masks_to_flows(sparse), masks_to_flows(cells))
    huge = np.where(cells > 0, cells.astype(np.int64) + 2**40, 0)
    np.testing.assert_array_equal(masks_to_flows(huge), masks_to_flows(cells))


def test_disconnected_label_parts_without_source_get_zero_flow():
    masks = np.zeros((20, 20), np.uint8)
    masks[2:9, 2:9] = 1
    masks[15:17, 15:17] = 1  # a small separate piece of the same label
    flows = masks_to_flows(masks)
    assert np.all(flows[:, 15:17, 15:17] == 0)
    assert np.all(np.hypot(*flows[:, 2:9, 2:9]).sum() > 40)


def test_mask_centres_and_niter():
    lab = np.zeros((10, 12), np.int32)
    lab[1:4, 1:8] = 1  # h=3, w=7 -> niter 2 * (3 + 7 + 4) = 28
    lab[6:9, 9:11] = 2  # h=3, w=2: centroid (7, 9.5) is a tie -> first in raster order
    cy, cx, niter = mask_centres(lab, 2)
    assert cy.tolist() == [2, 7]
    assert cx.tolist() == [4, 9]
    assert niter.tolist() == [28, 18]


def test_consecutive_labels_and_errors():
    lab, ids = consecutive_labels(np.array([[0, 5], [5, 2]], np.uint16))
    assert lab.tolist() == [[0, 2], [2, 1]]
    assert ids.tolist() == [2, 5]
    with pytest.raises(TypeError, match="integer"):
        masks_to_flows(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="2D"):
        masks_to_flows(np.ones((2, 4, 4), np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        masks_to_flows(-np.ones((4, 4), np.int32))


def test_empty_masks_give_zero_flows():
    flows = masks_to_flows(np.zeros((5, 6), np.uint16))
    assert flows.shape == (2, 5, 6)
    assert not flows.any()


def test_labels_to_flows(cells):
    shifted = np.where(cells > 0, cells + 10, 0)
    out = labels_to_flows(shifted)
    assert out.shape == (4, *cells.shape)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], consecutive_labels(shifted)[0])
    np.testing.assert_array_equal(out[1], (cells > 0).astype(np.float32))
    np.testing.assert_array_equal(out[2:], masks_to_flows(cells))
