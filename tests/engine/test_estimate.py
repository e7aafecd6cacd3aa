"""``diameter=None``: the estimate's network cost, its edge-corrected measure and its reuse."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cp2_engine.demo import default_sample_dir
from cp2_engine.inference import Model
from cp2_engine.inference._estimate import _interior_median
from cp2_engine.metrics import average_precision, diameters
from cp2_engine.network import NetRunner


@pytest.fixture
def network_pixels(monkeypatch):
    """Counts the pixels every network batch holds (B x H x W)."""
    seen = []
    call = NetRunner.__call__

    def counting(self, x):
        seen.append(int(x.shape[0] * x.shape[2] * x.shape[3]))
        return call(self, x)

    monkeypatch.setattr(NetRunner, "__call__", counting)
    return seen


@pytest.mark.parametrize(
    ("model_name", "sample", "most"),
    [
        ("cp2_nuclei", "dsb2018_fluo_nuclei", 2.0),
        ("cp2_cyto", "usiigaci_phase_3t3", 2.0),
        # the size model is 3x off on stained tissue: three refinement steps, two of them on
        # a centre window, before the chain settles
        ("cp2_nuclei", "dsb2018_tissue_rgb", 3.5),
    ],
)
def test_estimate_costs_about_one_extra_network_pass(network_pixels, model_name, sample, most):
    image = tifffile.imread(default_sample_dir() / f"{sample}.tif")
    truth = tifffile.imread(default_sample_dir() / f"{sample}_masks.tif")
    model = Model.load(model_name, device="cpu")
    given = model.segment(image, diameter=diameters(truth)[0])
    pixels_given = sum(network_pixels)
    network_pixels.clear()
    est = model.segment(image)
    assert sum(network_pixels) <= most * pixels_given
    ap_given = average_precision(truth, given.masks).ap.ravel()[0]
    ap_est = average_precision(truth, est.masks).ap.ravel()[0]
    assert ap_est >= ap_given - 0.05
    assert abs(np.log(est.diameter / diameters(truth)[0])) < 0.2


def test_a_small_converged_image_is_segmented_once_at_its_estimate(network_pixels):
    image = tifffile.imread(default_sample_dir() / "synthetic_phase_cells.tif")[:96, :96]
    model = Model.load("cp2_cyto", device="cpu")
    est = model.segment(image)
    again = model.segment(image, diameter=est.diameter)
    np.testing.assert_array_equal(est.masks, again.masks)


def _disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


def test_window_measure_leaves_out_cut_masks_and_corrects_for_size():
    # a window of a large image: two masks cut by its right edge, the rest whole
    masks = _disks((60, 60), [(15, 15), (15, 45), (45, 15), (45, 58), (30, 59)], 6)
    window = (slice(0, 60), slice(100, 160))
    d = _interior_median(masks, window, (60, 400))
    whole = diameters(_disks((60, 60), [(15, 15)], 6))[0]
    assert d == pytest.approx(whole, rel=0.01)
    # the same masks at the image's own edges are whole: nothing is left out
    assert _interior_median(masks, (slice(0, 60), slice(0, 60)), (60, 60)) == pytest.approx(
        diameters(masks)[0], rel=0.01
    )
    # a big mask counts more than a small one (fewer window positions hold it whole): three
    # small and two big masks, whose weights are 1/97**2 and 1/71**2 -> the big ones win
    mixed = np.zeros((100, 100), np.int32)
    for k, (y, x) in enumerate([(10, 10), (10, 80), (80, 10)], start=1):
        mixed[y : y + 4, x : x + 4] = k
    mixed[30:60, 30:60] = 4
    mixed[62:92, 62:92] = 5
    assert diameters(mixed)[0] < 5  # the unweighted median is a small mask
    d_mixed = _interior_median(mixed, (slice(100, 200), slice(100, 200)), (400, 400))
    assert d_mixed == pytest.approx(2 * np.sqrt(900 / np.pi), rel=0.01)
