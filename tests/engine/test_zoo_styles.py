"""Tests of cp2_engine.zoo._styles: crop/pad, diameter rescaling, batching, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cp2_engine.inference import Model, resize_image
from cp2_engine.network import CPnet
from cp2_engine.zoo import compute_styles
from cp2_engine.zoo._styles import center_crop, style_input


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CPnet().eval()


def test_center_crop_and_pad_keep_the_centre():
    x = np.arange(300 * 100, dtype=np.float32).reshape(1, 300, 100)
    out = center_crop(x, size=224)
    assert out.shape == (1, 224, 224)
    # rows 38..261 of the input, columns padded by 62 on the left
    np.testing.assert_array_equal(out[0, :, 62:162], x[0, 38:262])
    assert not out[0, :, :62].any() and not out[0, :, 162:].any()


def test_style_input_rescales_to_diam_mean():
    rng = np.random.default_rng(0)
    img = resize_image(rng.random((28, 28)).astype(np.float32), shape=(112, 112))
    big = resize_image(img, shape=(224, 224))
    a = style_input(img, diameter=15, diam_mean=30)  # upsampled x2
    b = style_input(big, diameter=30, diam_mean=30)  # already at diam_mean
    assert a.shape == b.shape == (2, 224, 224)
    assert np.corrcoef(a[0].ravel(), b[0].ravel())[0, 1] > 0.95
    assert not a[1].any()


def test_no_cells_means_no_resize_with_a_warning(caplog):
    img = np.random.default_rng(1).random((64, 80))
    with caplog.at_level(logging.WARNING, logger="cp2_engine.zoo._styles"):
        a = style_input(img, diameter=0.0)
    assert "no cells" in caplog.text
    np.testing.assert_array_equal(a, style_input(img, diameter=None))


def test_styles_are_unit_and_batch_independent(net):
    rng = np.random.default_rng(2)
    images = [rng.random((96, 120)), rng.random((250, 240)), rng.random((60, 60))]
    one = compute_styles(net, images, diameters=[20, 40, 30], batch_size=1)
    many = compute_styles(net, images, diameters=[20, 40, 30], batch_size=8)
    assert one.shape == (3, 256) and one.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_style_equals_the_full_forward_style_and_keeps_mode(net):
    img = np.random.default_rng(3).random((224, 224))
    net.train()
    style = compute_styles(net, [img], diameters=None)[0]
    assert net.training
    net.eval()
    x = torch.from_numpy(style_input(img)[None])
    with torch.no_grad():
        ref = net(x)[1][0].numpy()
    np.testing.assert_allclose(style, ref, atol=1e-5)


def test_accepts_a_model_and_uses_its_net():
    model = Model.random(seed=4)
    img = np.random.default_rng(4).random((64, 64))
    a = compute_styles(model, [img], diameters=30)
    b = compute_styles(model.net, [img], diameters=30)
    np.testing.assert_array_equal(a, b)


def test_errors(net):
    img = np.zeros((32, 32))
    with pytest.raises(ValueError, match="2 diameters"):
        compute_styles(net, [img, img], diameters=[10, 20, 30])
    with pytest.raises(ValueError, match="at least one image"):
        compute_styles(net, [], diameters=None)
    with pytest.raises(TypeError, match="CPnet"):
        compute_styles("not a net", [img])
