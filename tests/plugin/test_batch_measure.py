"""Issue 28 through the Plugins menu: a batch of sample images with a corrupt file (Cancel,
resume, summary, measurements against regionprops, GeoJSON read back, next/previous), the
Measure & export panel, and one click that restores a deleted ROI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import regionprops

from cp2_engine import io

pytestmark = pytest.mark.gui

PLUGIN = "napari-cp2"
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


def _sample_folder(tmp_path) -> Path:
    folder = tmp_path / "experiment"
    folder.mkdir()
    for path in sorted(SAMPLES.glob("*.tif")):
        if not path.stem.endswith("_masks"):
            shutil.copy(path, folder / path.name)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # a broken TIFF
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_cancel_resume_measure_and_open_results(make_napari_viewer, qtbot, tmp_path, notes):
    """Plugins > cp2 > Batch: a folder of the 5 sample images plus a corrupt file, cancelled
    after two images, then resumed; the tables, the GeoJSON and next/previous."""
    from shapely.geometry import shape

    folder = _sample_folder(tmp_path)
    viewer = make_napari_viewer()
    _dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "cp2")
    bw = main.batch
    bw._jobs.threaded = False  # deterministic cancel point; the worker thread is tested elsewhere
    bw._folder.value = folder
    bw._model.value = "cp2_nuclei"
    bw._diameter.value = 17.0
    bw._formats["geojson"].value = True
    stop_after = 2
    bw._progress.changed.connect(lambda v: bw.cancel() if v == stop_after else None)
    bw._run.native.click()
    assert bw.task.cancelled and bw._status.value == "cancelled"
    summary = _rows(folder / "cp2_batch_summary.csv")
    assert [r["status"] for r in summary] == ["failed", "segmented"]  # corrupt.tif sorts first
    assert summary[0]["image"] == "corrupt.tif" and summary[0]["error"]

    stop_after = -1  # resume: the finished image is skipped, the broken one reported again
    bw._run.native.click()
    result = bw.result
    assert result.counts == {"segmented": 4, "skipped": 1, "failed": 1}
    assert bw._table.value["data"][0][:2] == ["corrupt.tif", "failed"]
    assert not any(sev == "error" for sev, _ in notes), notes

    table = _rows(result.measurements)
    for row in result.rows[1:]:
        masks = io.read_labels(row.masks)
        image = io.imread(folder / row.image)
        props = regionprops(masks, intensity_image=image)
        mine = [r for r in table if r["image"] == row.image]
        assert row.n_rois == len(props) == len(mine) > 0, row.image
        for r, p in zip(mine, props):
            assert int(r["label"]) == p.label and int(r["area_px"]) == p.area
            assert float(r["perimeter_px"]) == pytest.approx(p.perimeter)
            assert float(r["eccentricity"]) == pytest.approx(p.eccentricity)
            assert float(r["solidity"]) == pytest.approx(p.solidity)
            means = np.atleast_1d(p.intensity_mean)
            names = ["intensity"] if image.ndim == 2 else [f"c{i}" for i in range(3)]
            for name, mean in zip(names, means):
                assert float(r[f"mean_{name}"]) == pytest.approx(mean)
        features = json.loads((folder / f"{Path(row.image).stem}.geojson").read_text())
        for feat in features["features"]:
            geom = shape(feat["geometry"])
            label = feat["properties"]["label"]
            assert geom.is_valid and geom.area == (masks == label).sum()

    labels_name = bw.show_result(0)  # "Next" opens the results one by one
    first = result.rows[1]
    assert labels_name == f"{Path(first.image).stem}_cp2_masks"
    np.testing.assert_array_equal(viewer.layers[labels_name].data, io.read_labels(first.masks))
    cached = bw._ws.cache[Path(first.image).stem]  # flows from _seg.npy: one-click drawing works
    assert cached.labels_layer == labels_name
    assert cached.segmentation.flows.shape == (2, *viewer.layers[labels_name].data.shape)
    bw._next.native.click()
    assert f"{Path(result.rows[2].image).stem}_cp2_masks" in viewer.layers
    assert main.correct._labels_layer.value.name == f"{Path(result.rows[2].image).stem}_cp2_masks"
    bw._prev.native.click()
    assert bw._shown.value.startswith("result 1/5")


def test_click_restores_a_deleted_roi_and_measure_panel_exports(
    make_napari_viewer, qtbot, tmp_path
):
    """Segment the nuclei sample, delete the ROI nearest the centre, click its centre: the
    proposal (Enter) restores it; the Measure panel fills the layer's features and exports."""
    from qtpy.QtCore import Qt
    from shapely.geometry import shape

    viewer = make_napari_viewer()
    image, _truth = viewer.open_sample(PLUGIN, "nuclei")
    _dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "cp2")
    seg, cor, meas = main.segment, main.correct, main.measure
    seg._jobs.threaded = False
    seg._image.value = image
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 17.0
    seg._run.native.click()
    labels = viewer.layers[f"{image.name}_cp2_masks"]
    cached = seg._ws.cache[image.name].segmentation
    # a cell the model misses: raise the threshold above the faintest ROI's cell probability
    masks = np.asarray(labels.data).copy()
    peak = {p.label: cached.cellprob[tuple(p.coords.T)].max() for p in regionprops(masks)}
    faint = min(peak, key=peak.get)
    seg._cellprob.value = float(np.ceil((peak[faint] + 0.01) / 0.2) * 0.2)  # recomputes
    missed = masks == faint
    assert not np.asarray(labels.data)[missed].any()
    ys, xs = np.nonzero(missed)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    cor._click_mode.value = True
    assert cor.propose_at((ys[k], xs[k])) is not None
    assert cor.accept_proposal() > 0
    assert "drawn 1 (1 by a click)" in cor._counts.value

    # the Done-when case: delete the ROI nearest the centre, click its centre, Enter
    masks = np.asarray(labels.data).copy()
    centre = np.array(masks.shape) / 2
    props = regionprops(masks)
    target = props[int(np.argmin([np.hypot(*(np.array(p.centroid) - centre)) for p in props]))]
    deleted = masks == target.label
    assert cor.delete(target.label)
    ys, xs = np.nonzero(deleted)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    roi = cor.propose_at((ys[k], xs[k]))
    assert roi is not None and "cp2 click proposal" in viewer.layers
    viewer.layers.selection.active = labels
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Return)  # Enter accepts
    if cor.proposal is not None:  # no keyboard focus under this display: the same action
        cor.accept_proposal()
    new = np.asarray(labels.data)
    restored = new == new[ys[k], xs[k]]
    iou = (restored & deleted).sum() / (restored | deleted).sum()
    assert new[ys[k], xs[k]] > 0 and iou >= 0.75, iou
    assert "cp2 click proposal" not in viewer.layers
    # a second proposal, discarded (Esc): the labels stay as they are
    label = int(new[ys[k], xs[k]])
    assert cor.delete(label)
    before = np.asarray(labels.data).copy()
    assert cor.propose_at((ys[k], xs[k])) is not None
    cor.discard_proposal()
    assert cor.proposal is None and "cp2 click proposal" not in viewer.layers
    np.testing.assert_array_equal(labels.data, before)
    assert cor.undo()  # the restored ROI is back

    meas._labels_layer.value = labels
    meas._image.value = image
    m = meas.measure()
    props = regionprops(new, intensity_image=np.asarray(image.data))
    assert list(labels.features["index"]) == [p.label for p in props]
    np.testing.assert_allclose(labels.features["area_px"], [p.area for p in props])
    np.testing.assert_allclose(
        labels.features["mean_intensity"], [p.intensity_mean for p in props]
    )
    assert m.n_rois == len(props)
    meas._folder.value = tmp_path
    csv_path = meas.export("csv")
    assert len(_rows(csv_path)) == len(props)
    geo = json.loads(meas.export("geojson").read_text())
    assert {f["properties"]["label"] for f in geo["features"]} == {p.label for p in props}
    assert all(f["properties"]["objectType"] == "detection" for f in geo["features"])
    assert sum(shape(f["geometry"]).area for f in geo["features"]) == (new > 0).sum()
    assert meas.export("geojson") is None  # never clobbers without "replace existing files"
    assert meas.export("imagej").name.endswith("_rois.zip")
    assert meas.export("outlines").read_text().count("\n") == len(props)
