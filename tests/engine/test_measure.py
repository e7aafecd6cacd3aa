"""Per-ROI measurements (cp2_engine.metrics.measure_rois), their CSV and ``cp2 measure``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from skimage.measure import regionprops
from skimage.segmentation import expand_labels

from cp2_engine import io
from cp2_engine.cli import main
from cp2_engine.metrics import measure_rois

PAIRS = {
    "area_px": "area",
    "perimeter_px": "perimeter",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "equivalent_diameter_px": "equivalent_diameter_area",
}


def ragged_labels(seed=0, side=160, n=30):
    """Touching cells with random holes and corner-touching fragments, sparse label ids."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((side, side), np.int32)
    lab[rng.integers(0, side, n), rng.integers(0, side, n)] = rng.permutation(n) * 7 + 3
    lab = expand_labels(lab, 10)
    lab[rng.random(lab.shape) < 0.04] = 0
    return lab


def assert_matches_regionprops(columns: dict, labels, image) -> None:
    props = regionprops(labels, intensity_image=image)
    assert columns["label"].tolist() == [p.label for p in props]
    for ours, theirs in PAIRS.items():
        np.testing.assert_allclose(columns[ours], [getattr(p, theirs) for p in props], rtol=1e-9)
    np.testing.assert_allclose(columns["centroid_y"], [p.centroid[0] for p in props])
    np.testing.assert_allclose(columns["centroid_x"], [p.centroid[1] for p in props])
    for c in range(image.shape[-1]):
        np.testing.assert_allclose(columns[f"mean_c{c}"], [p.intensity_mean[c] for p in props])
        np.testing.assert_allclose(
            columns[f"integrated_c{c}"], [p.intensity_mean[c] * p.area for p in props]
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_equal_skimage_regionprops(seed):
    labels = ragged_labels(seed)
    image = np.random.default_rng(seed).random((*labels.shape, 3))
    assert_matches_regionprops(measure_rois(labels, image).columns, labels, image)


def test_edge_cases_single_pixels_lines_and_image_border():
    lab = np.zeros((7, 9), np.uint16)
    lab[0, 0] = 1  # one pixel in the corner
    lab[2, 1:8] = 2  # a horizontal line
    lab[3:7, 8] = 3  # a vertical line on the right border
    lab[4, 2], lab[5, 3], lab[6, 4] = 4, 4, 4  # a diagonal: three corner-touching pixels
    image = np.arange(lab.size, dtype=float).reshape(*lab.shape, 1)
    assert_matches_regionprops(measure_rois(lab, image).columns, lab, image)


def test_scale_units_and_errors():
    lab = np.zeros((10, 10), np.uint8)
    lab[2:6, 2:6] = 1
    cols = measure_rois(lab, scale=(0.5, 0.25), unit="um").columns
    assert cols["area_um2"].tolist() == [16 * 0.125]
    assert "perimeter_um" not in cols  # not defined for rectangular pixels
    cols = measure_rois(lab, scale=(2.0, 2.0), unit="nm").columns
    assert cols["perimeter_nm"][0] == pytest.approx(2 * cols["perimeter_px"][0])
    assert measure_rois(np.zeros((4, 4), int)).n_rois == 0
    with pytest.raises(ValueError, match="does not match labels"):
        measure_rois(lab, np.zeros((9, 10)))
    with pytest.raises(TypeError, match="integer"):
        measure_rois(lab.astype(float))
    with pytest.raises(ValueError, match="positive"):
        measure_rois(lab, scale=(0, 1))


def test_cli_measure_writes_one_table_for_a_batch(tmp_path):
    rng = np.random.default_rng(3)
    expected = {}
    for name in ("a", "b"):
        labels = ragged_labels(int(rng.integers(100)), side=96, n=12).astype(np.uint16)
        image = rng.integers(0, 255, (96, 96, 2)).astype(np.uint8)
        io.imwrite(tmp_path / f"{name}.tif", image)
        io.save_masks(tmp_path / f"{name}_cp_masks.tif", labels)
        expected[f"{name}.tif"] = regionprops(labels, intensity_image=image)
    out = tmp_path / "cells.csv"
    assert main(["measure", str(tmp_path), "--out", str(out), "--pixel-size", "0.5"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == sum(len(p) for p in expected.values())
    for row in rows:
        prop = next(p for p in expected[row["image"]] if p.label == int(row["label"]))
        assert float(row["area_px"]) == prop.area
        assert float(row["area_um2"]) == pytest.approx(prop.area * 0.25)
        assert float(row["perimeter_px"]) == pytest.approx(prop.perimeter)
        assert float(row["solidity"]) == pytest.approx(prop.solidity)
        assert float(row["mean_c1"]) == pytest.approx(prop.intensity_mean[1])
    assert main(["measure", str(tmp_path), "--out", str(out)]) == 2  # never clobbers
    (tmp_path / "c.tif").write_bytes(b"")
    assert main(["measure", str(tmp_path / "c.tif"), "--out", str(tmp_path / "c.csv")]) == 2
