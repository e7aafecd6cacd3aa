"""Tests of channel selection, percentile normalisation and resizing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cp2_engine.inference import convert_image, resize_image
from cp2_engine.inference._transforms import check_image, normalize99


def _rgb(rng, shape=(24, 30)):
    return rng.integers(0, 255, size=(*shape, 3)).astype(np.uint8)


def test_channels_follow_cellpose_convention(rng):
    img = _rgb(rng)
    x = convert_image(img, channels=(2, 3))
    np.testing.assert_array_equal(x[0], img[..., 1])
    np.testing.assert_array_equal(x[1], img[..., 2])
    grey = convert_image(img, channels=(0, 0))
    np.testing.assert_allclose(grey[0], img.mean(-1), rtol=1e-6)
    assert not grey[1].any()
    both = convert_image(img, channels=(0, 1))
    np.testing.assert_array_equal(both[1], img[..., 0])


def test_channel_axis_detection_and_explicit_axis(rng):
    img = _rgb(rng)
    first = np.moveaxis(img, -1, 0)
    np.testing.assert_array_equal(
        convert_image(img, channels=(1, 2)), convert_image(first, channels=(1, 2))
    )
    np.testing.assert_array_equal(
        convert_image(first, channels=(3, 0), channel_axis=0)[0], img[..., 2]
    )
    singleton = img[None, ..., :1]  # (1, H, W, 1) squeezes to a grey image
    assert convert_image(singleton).shape == (2, 24, 30)


def test_missing_channel_is_a_clear_error(rng):
    with pytest.raises(ValueError, match="only 3 channel"):
        convert_image(_rgb(rng), channels=(4, 0))
    with pytest.raises(ValueError, match="chan2"):
        convert_image(rng.random((20, 20)), channels=(1, 2))
    with pytest.raises(ValueError, match="non-negative"):
        convert_image(rng.random((20, 20)), channels=(-1, 0))


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros(10), ValueError, "2-D image"),
        (np.zeros((2, 3, 16, 16)), ValueError, "2-D image"),
        (np.zeros((20, 30, 40)), ValueError, "channel axis"),
        (np.zeros((0, 5)), ValueError, "empty"),
        (np.full((8, 8), np.nan), ValueError, "NaN"),
        (np.ones((8, 8), complex), TypeError, "real numbers"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "real numbers"),
    ],
)
def test_bad_images_raise(image, error, match):
    with pytest.raises(error, match=match):
        convert_image(image)


def test_normalize99_maps_percentiles(rng):
    img = rng.gamma(2.0, 100.0, size=(50, 60))
    out = normalize99(img)
    lo, hi = np.percentile(img, [1, 99])
    np.testing.assert_allclose(out, (img - lo) / (hi - lo), rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.percentile(out, [1, 99]), [0, 1], atol=1e-5)


def test_constant_channel_becomes_zero_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cp2_engine.inference._transforms"):
        out = normalize99(np.full((16, 16), 42, np.uint16))
    assert not out.any()
    assert "constant" in caplog.text


def test_normalize_and_invert(rng):
    img = rng.random((32, 32))
    x = convert_image(img, normalize=True, invert=True)
    np.testing.assert_allclose(x[0], 1 - normalize99(img), atol=1e-6)
    assert not x[1].any()


def test_resize_linear_uses_pixel_centres():
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    up = resize_image(ramp, shape=(4, 16))
    expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
    np.testing.assert_allclose(up[0], expected, atol=1e-5)
    down = resize_image(np.stack([ramp, 2 * ramp]), rescale=0.5)
    assert down.shape == (2, 2, 4)
    np.testing.assert_allclose(down[1], 2 * down[0], atol=1e-5)


def test_resize_nearest_keeps_labels(rng):
    labels = rng.integers(0, 70000, size=(10, 12)).astype(np.uint32)
    out = resize_image(labels, rescale=2.0, interpolation="nearest")
    assert out.dtype == np.uint32 and out.shape == (20, 24)
    np.testing.assert_array_equal(out[::2, ::2], labels)
    with pytest.raises(ValueError, match="exactly one"):
        resize_image(labels)
    with pytest.raises(ValueError, match="positive"):
        resize_image(labels, rescale=-1.0)


def test_check_image_accepts_bool():
    assert check_image(np.ones((3, 3), bool)).dtype == np.uint8


def test_resize_nearest_round_trip_keeps_labels_in_place():
    """Down and back up with the nearest rule must not move objects: the floor rule of OpenCV's
    INTER_NEAREST shifted them by about a pixel (labels half a pixel off their image)."""
    from scipy import ndimage as ndi

    from cp2_engine.synthetic import touching_cells

    labels = touching_cells((200, 200), diameter=40, seed=3).labels.astype(np.int32)
    small = resize_image(labels, shape=(176, 176), interpolation="nearest")
    back = resize_image(small, shape=labels.shape, interpolation="nearest").astype(np.int32)
    ids = np.unique(labels)[1:]
    before = np.array(ndi.center_of_mass(labels > 0, labels, ids))
    after = np.array(ndi.center_of_mass(back > 0, back, ids))
    assert np.abs(np.nanmean(after - before, axis=0)).max() < 0.2
