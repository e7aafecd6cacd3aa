"""Model.segment on z-stacks: do_3d, stitching, axes, errors; the plane runner equals run_tiled."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.inference import Model, SegmentConfig, run_tiled
from cp2_engine.inference._planes import run_planes, stack_to_zyxc
from cp2_engine.synthetic import touching_cells_3d


@pytest.fixture(scope="module")
def model():
    return Model.random(seed=0)


@pytest.fixture(scope="module")
def stack():
    return touching_cells_3d((6, 40, 48), diameter=12, seed=2).image


def test_run_planes_equals_run_tiled_per_plane(model, stack):
    x = np.stack([stack, np.zeros_like(stack)])
    cfg = SegmentConfig(batch_size=3)
    y, _, _ = run_planes(model.net, x, cfg, device="cpu", channels_last=False)
    for z in (0, 5):
        ref, _ = run_tiled(model.net, x[:, z], batch_size=3)
        np.testing.assert_allclose(y[:, z], ref, atol=1e-5)


def test_do_3d_shapes(model, stack):
    seg = model.segment(stack, diameter=30, do_3d=True, anisotropy=2.0, flow3d_smooth=1.0)
    assert seg.masks.shape == stack.shape and seg.flows.shape == (3, *stack.shape)
    assert seg.cellprob.shape == stack.shape and seg.style.shape == (256,)
    again = model.recompute_masks(seg, cellprob_threshold=1e9)
    assert again.masks.shape == stack.shape and again.n_masks == 0


def test_stitch_shapes_and_channels(model, stack):
    two = np.stack([stack, stack[::-1]], axis=-1)
    seg = model.segment(two, diameter=30, channels=(1, 2), stitch_threshold=0.5)
    assert seg.masks.shape == stack.shape and seg.flows.shape == (2, *stack.shape)
    zcyx = np.moveaxis(two, -1, 1)
    seg2 = model.segment(zcyx, diameter=30, channels=(1, 2), stitch_threshold=0.5)
    np.testing.assert_allclose(seg2.flows, seg.flows, atol=1e-5)


def test_constant_stack_is_empty(model):
    seg = model.segment(np.ones((4, 20, 20)), do_3d=True)
    assert seg.n_masks == 0 and seg.flows.shape == (3, 4, 20, 20)


def test_2d_path_unchanged(model):
    img = np.random.default_rng(0).random((40, 40))
    assert model.segment(img, diameter=30).masks.shape == (40, 40)


def test_axis_errors():
    with pytest.raises(ValueError, match="channel axis"):
        stack_to_zyxc(np.zeros((5, 3, 40, 4)), z_axis=None, channel_axis=None)
    with pytest.raises(ValueError, match="channel axis"):
        stack_to_zyxc(np.zeros((5, 30, 40, 40)), z_axis=None, channel_axis=None)
    assert stack_to_zyxc(np.zeros((30, 5, 40)), z_axis=1, channel_axis=None).shape == (
        5,
        30,
        40,
        1,
    )
    with pytest.raises(ValueError, match="do_3d=False"):
        stack_to_zyxc(np.zeros((30, 40)), z_axis=None, channel_axis=None)
    with pytest.raises(ValueError, match="both"):
        stack_to_zyxc(np.zeros((5, 3, 40, 40)), z_axis=1, channel_axis=1)


def test_config_errors():
    with pytest.raises(ValueError, match="not both"):
        SegmentConfig(do_3d=True, stitch_threshold=0.5)
    with pytest.raises(ValueError, match="anisotropy"):
        SegmentConfig(anisotropy=0)
    with pytest.raises(ValueError, match="stitch_threshold"):
        SegmentConfig(stitch_threshold=2)
    with pytest.raises(ValueError, match="flow3d_smooth"):
        SegmentConfig(flow3d_smooth=-1)
