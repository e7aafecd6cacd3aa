"""The synthetic generator: seeded, exact labels, touching connected cells, every style."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from cp2_engine.synthetic import disks, touching_cells
from cp2_engine.synthetic._cells import STYLES


@pytest.mark.parametrize("style", STYLES)
def test_touching_cells_labels_are_consecutive_and_connected(style):
    sample = touching_cells((160, 160), diameter=24, seed=3, style=style)
    labels = sample.labels
    ids = np.unique(labels)
    assert ids[0] == 0
    np.testing.assert_array_equal(ids[1:], np.arange(1, labels.max() + 1))
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        assert ndi.label(labels[sl] == lab)[1] == 1
    assert sample.image.shape == (160, 160)
    assert sample.image.min() >= 0.0 and sample.image.max() <= 1.0


def test_cells_touch_their_neighbours():
    labels = touching_cells((200, 200), diameter=24, seed=0).labels
    right = (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
    assert right.sum() > 50


def test_same_seed_same_image_and_no_global_rng_use():
    state = np.random.get_state()[1].copy()
    a = touching_cells((96, 96), seed=7, nucleus=True)
    b = touching_cells((96, 96), seed=7, nucleus=True)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.image.shape == (96, 96, 2)
    np.testing.assert_array_equal(state, np.random.get_state()[1])


def test_n_cells_and_diameter_are_respected():
    sample = touching_cells((256, 256), n_cells=30, diameter=20, seed=1)
    assert 25 <= sample.labels.max() <= 30
    areas = np.bincount(sample.labels.ravel())[1:]
    median_diam = 2 * np.sqrt(np.median(areas) / np.pi)
    assert 14 < median_diam < 24


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="style"):
        touching_cells((64, 64), style="confocal")
    with pytest.raises(ValueError, match="shape"):
        touching_cells((64,))
    with pytest.raises(ValueError, match="diameter"):
        touching_cells((64, 64), diameter=1)


def test_disks_do_not_touch():
    sample = disks((96, 96), n_disks=6, radius=6, seed=2)
    assert sample.labels.max() == 6
    grown = ndi.grey_dilation(sample.labels, size=3)
    assert np.all((grown == sample.labels) | (sample.labels == 0) | (grown == 0))


def test_non_square_images_work():
    sample = touching_cells((96, 112), diameter=20, seed=0, nucleus=True)
    assert sample.labels.shape == (96, 112) and sample.image.shape == (96, 112, 2)
    assert sample.labels.max() > 5
