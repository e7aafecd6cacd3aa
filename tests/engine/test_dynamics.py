"""Tests of Euler dynamics (follow_flows) and histogram clustering (get_masks)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cp2_engine.postprocess import follow_flows, get_masks


def _reference_euler(field: np.ndarray, mask: np.ndarray, niter: int) -> np.ndarray:
    """Plain step-by-step numpy integration of every pixel for all niter steps (no early stop).

    Same float32 positions and mixed-precision bilinear sum as the engine, written step-major.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    py, px = ys.astype(np.float32), xs.astype(np.float32)
    for _ in range(niter):
        y0, x0 = py.astype(np.int64), px.astype(np.int64)
        fy, fx = py - y0.astype(np.float32), px - x0.astype(np.float32)
        yf, xf = np.clip(y0, 0, h - 1), np.clip(x0, 0, w - 1)
        yf1, xf1 = np.minimum(yf + 1, h - 1), np.minimum(xf + 1, w - 1)
        gy, gx = 1.0 - fy.astype(np.float64), 1.0 - fx.astype(np.float64)
        step = []
        for c in range(2):
            f = field[c]
            v = (
                f[yf, xf].astype(np.float64) * gy * gx
                + f[yf, xf1].astype(np.float64) * gy * fx.astype(np.float64)
                + (f[yf1, xf] * fy).astype(np.float64) * gx
                + (f[yf1, xf1] * fy * fx).astype(np.float64)
            )
            step.append(v.astype(np.float32))
        py = np.minimum(np.float32(h - 1), np.maximum(np.float32(0), py + step[0]))
        px = np.minimum(np.float32(w - 1), np.maximum(np.float32(0), px + step[1]))
    return np.stack([py, px])


def _sink_field(shape, centres, rng):
    """Unit flows towards the nearest of several centres, plus a little smooth noise."""
    yy, xx = np.indices(shape).astype(np.float32)
    d = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centres])
    near = d.argmin(0)
    cy = np.asarray(centres)[near, 0]
    cx = np.asarray(centres)[near, 1]
    vec = np.stack([cy - yy, cx - xx])
    vec /= 1e-6 + np.hypot(*vec)
    vec += ndi.gaussian_filter(rng.normal(0, 0.3, size=vec.shape), (0, 2, 2))
    return vec.astype(np.float32)


@pytest.mark.parametrize("niter", [0, 1, 57, 200])
def test_early_stop_is_exact(rng, niter):
    field = _sink_field((40, 48), [(10.3, 12.7), (28.0, 35.5)], rng)
    mask = rng.random((40, 48)) < 0.7
    got = follow_flows(field, mask, niter=niter)
    np.testing.assert_array_equal(got, _reference_euler(field, mask, niter))


def test_constant_field_moves_and_clamps():
    field = np.zeros((2, 6, 10), np.float32)
    field[1] = 0.5
    mask = np.zeros((6, 10), bool)
    mask[1, 0] = mask[4, 8] = True
    out = follow_flows(field, mask, niter=3)
    np.testing.assert_array_equal(out, [[1.0, 4.0], [1.5, 9.0]])


def test_zero_field_keeps_positions(rng):
    mask = rng.random((12, 9)) < 0.5
    out = follow_flows(np.zeros((2, 12, 9), np.float32), mask, niter=50)
    np.testing.assert_array_equal(out, np.stack(np.nonzero(mask)).astype(np.float32))


def test_follow_flows_errors():
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        follow_flows(np.zeros((3, 4, 4)), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        follow_flows(np.zeros((2, 4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="niter"):
        follow_flows(np.zeros((2, 4, 4)), np.ones((4, 4), bool), niter=-1)


def _clusters(shape, groups):
    """A mask and final positions: each group of pixels ends around one point."""
    mask = np.zeros(shape, bool)
    for (y0, y1, x0, x1), _ in groups:
        mask[y0:y1, x0:x1] = True
    ys, xs = np.nonzero(mask)
    p = np.stack([ys, xs]).astype(np.float32)
    for (y0, y1, x0, x1), target in groups:
        sel = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
        p[:, sel] = np.asarray(target, np.float32)[:, None]
    return mask, p


def test_get_masks_two_clusters():
    mask, p = _clusters((30, 30), [((2, 8, 2, 8), (5.2, 5.9)), ((15, 25, 15, 25), (20.5, 20.1))])
    labels = get_masks(p, mask, shape=(30, 30))
    assert labels.dtype == np.uint16
    assert labels.max() == 2
    assert len(np.unique(labels[2:8, 2:8])) == 1
    assert len(np.unique(labels[15:25, 15:25])) == 1
    assert labels[2, 2] != labels[15, 15]
    assert np.all(labels[~mask] == 0)


def test_growth_joins_nearby_bins_and_small_clusters_get_no_seed():
    mask, p = _clusters(
        (30, 30),
        [
            ((2, 8, 2, 8), (5.0, 5.0)),  # 36 pixels: a seed
            ((2, 3, 9, 12), (6.0, 6.0)),  # 3 pixels in a neighbouring bin: joined by growth
            ((4, 5, 9, 12), (8.0, 8.0)),  # 3 pixels, no dense bins in between: not joined
            ((20, 21, 20, 27), (25.0, 25.0)),  # 7 pixels: too few for a seed
        ],
    )
    labels = get_masks(p, mask, shape=(30, 30))
    assert labels.max() == 1
    assert np.all(labels[2, 9:12] == 1)
    assert np.all(labels[4, 9:12] == 0)
    assert np.all(labels[20, 20:27] == 0)


def test_get_masks_drops_too_large_regions():
    mask, p = _clusters((20, 20), [((0, 20, 0, 10), (10.0, 5.0)), ((2, 6, 14, 18), (4.0, 16.0))])
    labels = get_masks(p, mask, shape=(20, 20), max_size_fraction=0.4)
    assert labels.max() == 1
    assert np.all(labels[:, :10] == 0)
    assert np.all(labels[2:6, 14:18] == 1)


def test_get_masks_validation_and_empty():
    mask = np.zeros((5, 5), bool)
    assert not get_masks(np.zeros((2, 0), np.float32), mask, shape=(5, 5)).any()
    with pytest.raises(ValueError, match="p must have shape"):
        get_masks(np.zeros((2, 3)), mask, shape=(5, 5))
    with pytest.raises(ValueError, match="given shape"):
        get_masks(np.zeros((2, 0)), mask, shape=(5, 6))
