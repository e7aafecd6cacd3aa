"""Tests of the training augmentation (cp2_engine.training._augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from cp2_engine.postprocess import masks_to_flows
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import random_rotate_and_resize


def _sample(seed=0, shape=(96, 96), diameter=24):
    s = touching_cells(shape, n_cells=10, diameter=diameter, seed=seed)
    img = np.stack([s.image, np.zeros_like(s.image)]).astype(np.float32)
    return img, s.labels.astype(np.int64), masks_to_flows(s.labels)


def test_shapes_and_types():
    img, lab, fl = _sample()
    out = random_rotate_and_resize(
        [img, img[:, :80]], [lab, lab[:80]], [fl, fl[:, :80]], rng=np.random.default_rng(0),
        bsize=64,
    )  # fmt: skip
    assert out.images.shape == (2, 2, 64, 64) and out.images.dtype == torch.float32
    assert out.labels.shape == (2, 64, 64) and out.labels.dtype == torch.int64
    assert out.flows.shape == (2, 2, 64, 64)
    assert out.target().shape == (2, 3, 64, 64)
    assert out.scale.shape == (2,)


def test_identity_when_nothing_random():
    img, lab, fl = _sample(shape=(64, 64))
    out = random_rotate_and_resize(
        [img], [lab], [fl], rng=np.random.default_rng(0), bsize=64, scale_range=0.0,
        rotate=False, flip=False,
    )  # fmt: skip
    np.testing.assert_allclose(out.images[0].numpy(), img, atol=1e-4)
    np.testing.assert_array_equal(out.labels[0].numpy(), lab)
    np.testing.assert_allclose(out.flows[0].numpy(), fl, atol=1e-4)


def test_flip_negates_x_flow():
    img, lab, fl = _sample(shape=(64, 64))
    rng = np.random.default_rng(0)
    while True:  # find a seed whose single draw is a flip
        seed = int(rng.integers(1 << 30))
        if np.random.default_rng(seed).random() < 0.5:
            break
    out = random_rotate_and_resize(
        [img], [lab], [fl], rng=np.random.default_rng(seed), bsize=64, scale_range=0.0,
        rotate=False, flip=True,
    )  # fmt: skip
    np.testing.assert_array_equal(out.labels[0].numpy(), lab[:, ::-1])
    np.testing.assert_allclose(out.flows[0, 0].numpy(), fl[0, :, ::-1], atol=1e-4)
    np.testing.assert_allclose(out.flows[0, 1].numpy(), -fl[1, :, ::-1], atol=1e-4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_augmented_flows_match_recomputed_flows(seed):
    img, lab, fl = _sample(seed=seed, shape=(128, 128), diameter=30)
    out = random_rotate_and_resize(
        [img], [lab], [fl], rng=np.random.default_rng(seed), bsize=96, scale_range=0.5
    )
    alab = out.labels[0].numpy()
    recomputed = masks_to_flows(alab)
    aug = out.flows[0].numpy()
    inner = ndi.binary_erosion(alab > 0, iterations=2) & (
        ndi.grey_erosion(alab, size=5) == ndi.grey_dilation(alab, size=5)
    )
    # cells cut by the crop edge keep their original centre, so leave them out
    edge = np.unique(np.concatenate([alab[0], alab[-1], alab[:, 0], alab[:, -1]]))
    inner &= ~np.isin(alab, edge)
    assert inner.sum() > 500
    cos = (aug * recomputed).sum(0)[inner] / (np.linalg.norm(aug, axis=0)[inner] + 1e-6)
    assert np.median(cos) > 0.95
    assert np.quantile(cos, 0.25) > 0.9
    assert np.mean(cos) > 0.85


def test_scale_normalises_diameter():
    img, lab, fl = _sample(shape=(96, 96), diameter=24)
    out = random_rotate_and_resize(
        [img], [lab], [fl], rng=np.random.default_rng(0), bsize=96, scale_range=0.0,
        diameters=[60.0], diam_mean=30.0, rotate=False, flip=False,
    )  # fmt: skip
    assert out.scale[0] == pytest.approx(0.5)
    # every input pixel lands in the (larger) crop: area shrinks by scale**2
    ratio = (out.labels[0] > 0).sum().item() / (lab > 0).sum()
    assert ratio == pytest.approx(0.25, rel=0.1)


def test_seeded_and_no_global_rng_use():
    img, lab, fl = _sample()
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    a = random_rotate_and_resize([img], [lab], [fl], rng=np.random.default_rng(5), bsize=48)
    b = random_rotate_and_resize([img], [lab], [fl], rng=np.random.default_rng(5), bsize=48)
    c = random_rotate_and_resize([img], [lab], [fl], rng=np.random.default_rng(6), bsize=48)
    assert torch.equal(a.images, b.images) and torch.equal(a.flows, b.flows)
    assert not torch.equal(a.images, c.images)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_bad_inputs():
    img, lab, _ = _sample()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-empty"):
        random_rotate_and_resize([], rng=rng)
    with pytest.raises(ValueError, match="labels has 2 entries"):
        random_rotate_and_resize([img], [lab, lab], rng=rng)
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        random_rotate_and_resize([img], [lab[:10]], rng=rng)
    with pytest.raises(ValueError, match=r"images\[0\] must be \(C, H, W\)"):
        random_rotate_and_resize([img[0]], rng=rng)
    with pytest.raises(ValueError, match="target"):
        random_rotate_and_resize([img], rng=rng, bsize=32).target()
