"""ROI exports: GeoJSON (QuPath detections) read back with shapely, Cellpose outlines, and
``cp2 rois``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import roifile
import shapely
from shapely.geometry import Point, shape

from cp2_engine import io
from cp2_engine.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


def labels_with_holes_and_corners(seed=0):
    masks = io.read_labels(SAMPLES / "dsb2018_tissue_rgb_masks.tif").astype(np.uint16)
    rng = np.random.default_rng(seed)
    masks[rng.random(masks.shape) < 0.03] = 0  # holes and corner-touching fragments
    masks[5:9, 5:9] = masks.max() + 1  # a ring: one hole in the middle
    masks[6:8, 6:8] = 0
    return masks


def read_geojson(path):
    fc = json.loads(Path(path).read_text())
    assert fc["type"] == "FeatureCollection"
    return {f["properties"]["label"]: f for f in fc["features"]}


def test_geojson_reads_back_as_the_masks(tmp_path):
    masks = labels_with_holes_and_corners()
    feats = read_geojson(io.save_geojson(tmp_path / "a.geojson", masks))
    ids = np.unique(masks[masks > 0])
    assert sorted(feats) == ids.tolist()
    geoms = {}
    for label, feat in feats.items():
        assert feat["properties"]["objectType"] == "detection"
        geom = shape(feat["geometry"])
        assert geom.is_valid, shapely.validation.explain_validity(geom)
        assert geom.area == (masks == label).sum()  # pixel-edge polygons: exact areas
        geoms[label] = geom
    # touching cells: no overlap, no gap (the union covers exactly the foreground)
    assert shapely.union_all(list(geoms.values())).area == (masks > 0).sum()
    ring = geoms[int(masks.max())]
    assert len(ring.interiors) == 1 and not ring.contains(Point(7.0, 7.0))
    # IoU with the mask, pixel centres tested against the polygon (x, y with y down)
    rng = np.random.default_rng(1)
    for label in rng.choice(ids, 5, replace=False):
        ys, xs = np.nonzero(masks == label)
        y0, y1, x0, x1 = ys.min() - 2, ys.max() + 3, xs.min() - 2, xs.max() + 3
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = shapely.contains_xy(geoms[int(label)], xx + 0.5, yy + 0.5)
        truth = masks[max(y0, 0) : y1, max(x0, 0) : x1] == label
        inside = inside[max(-y0, 0) :, max(-x0, 0) :][: truth.shape[0], : truth.shape[1]]
        assert (inside & truth).sum() / (inside | truth).sum() == 1.0


def test_corner_touching_pixels_are_a_multipolygon(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[0, 0] = m[1, 1] = 1
    feat = read_geojson(io.save_geojson(tmp_path / "m.json", m, classification="Tumor"))[1]
    assert feat["geometry"]["type"] == "MultiPolygon"
    assert feat["properties"]["classification"] == {"name": "Tumor"}
    assert shape(feat["geometry"]).is_valid and shape(feat["geometry"]).area == 2
    with pytest.raises(ValueError, match="geojson"):
        io.save_geojson(tmp_path / "m.txt", m)


def test_outlines_txt_are_the_boundary_pixels(tmp_path):
    masks = io.read_labels(SAMPLES / "dsb2018_fluo_nuclei_masks.tif")
    lines = io.save_outlines_txt(tmp_path / "n_cp_outlines.txt", masks).read_text().splitlines()
    ids = np.unique(masks[masks > 0])
    assert len(lines) == len(ids)
    for label, line in zip(ids, lines):
        xy = np.array(line.split(","), int).reshape(-1, 2)
        cell = masks == label
        assert cell[xy[:, 1], xy[:, 0]].all()  # every point is a pixel of the cell
        pad = np.pad(cell, 1)
        border = cell & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
        assert set(map(tuple, xy[:, ::-1])) <= set(zip(*np.nonzero(border)))
        steps = np.abs(np.diff(np.vstack([xy, xy[:1]]), axis=0)).max(axis=1)
        assert steps.max() <= 1  # an 8-connected closed chain


def test_cli_rois_writes_all_three_formats(tmp_path):
    masks = labels_with_holes_and_corners()
    io.save_masks(tmp_path / "t_cp_masks.tif", masks)
    assert main(["rois", str(tmp_path / "t_cp_masks.tif"), "--out", str(tmp_path / "o")]) == 0
    out = tmp_path / "o"
    n = len(np.unique(masks)) - 1
    assert len(read_geojson(out / "t.geojson")) == n
    assert len((out / "t_cp_outlines.txt").read_text().splitlines()) == n
    assert len(roifile.roiread(out / "t_rois.zip")) == n
    assert main(["rois", str(tmp_path), "--format", "geojson", "--out", str(out)]) == 2
