"""The plugin as napari itself opens it: Plugins menu, File > Open Sample, open/save with the
plugin's reader and writers, and the human-in-the-loop loop driven only through widgets that
napari's Plugins menu created (no widget class is constructed by hand in this file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

pytestmark = pytest.mark.gui

PLUGIN = "napari-cp2"
ROOT = Path(__file__).resolve().parents[2]
MANIFEST = npe2.PluginManifest.from_file(ROOT / "napari.yaml")
WIDGETS = [w.display_name for w in MANIFEST.contributions.widgets]
SAMPLES = [s.key for s in MANIFEST.contributions.sample_data]


def _open(viewer, name: str):
    """Plugins > cp2 > ``name``: napari builds the widget and docks it; returns the widget."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert widget in viewer.window.dock_widgets.values()
    assert dock.widget() is not None
    return widget


def _panels(widget):
    return widget.panels() if hasattr(widget, "panels") else (widget,)


def test_the_single_cp2_dock_comes_first():
    assert WIDGETS[0] == "cp2"
    assert set(WIDGETS[1:]) == {"Model & segment", "Correct", "Train (human-in-the-loop)",
                                "Evaluate", "Batch", "Measure & export"}  # fmt: skip


def test_every_widget_opens_from_the_plugins_menu(make_napari_viewer):
    from napari_cp2._workspace import unwrap_viewer, workspace_for

    viewer = make_napari_viewer()
    for name in WIDGETS:
        widget = _open(viewer, name)
        for panel in _panels(widget):
            assert unwrap_viewer(panel._viewer) is viewer, name
            # every panel, from any menu entry, shares the viewer's one workspace
            assert panel._ws is workspace_for(viewer), name
    # opening the same entry again shows the existing dock instead of a second copy
    n_docks = len(viewer.window.dock_widgets)
    _open(viewer, WIDGETS[0])
    assert len(viewer.window.dock_widgets) == n_docks


@pytest.mark.parametrize("key", SAMPLES)
def test_every_sample_opens_from_file_open_sample(make_napari_viewer, key):
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, key)
    assert len(layers) == 2
    image, truth = layers
    assert isinstance(image, Image) and isinstance(truth, Labels)
    assert truth.name == f"{image.name}_truth" and not truth.visible
    spatial = image.data.shape[:-1] if image.rgb else image.data.shape  # 2-D, or the z-stack
    assert truth.data.shape == spatial and truth.data.max() >= 5
    assert [layer.name for layer in viewer.layers] == [image.name, truth.name]


def test_reader_and_writers_through_napari(make_napari_viewer, tmp_path):
    from cp2_engine import io as cio
    from cp2_engine.synthetic import touching_cells

    viewer = make_napari_viewer()
    sample = touching_cells((64, 80), diameter=14, seed=4)
    labels = viewer.add_labels(sample.labels.astype(np.uint16), name="cells")
    tif, npy = tmp_path / "cells_masks.tif", tmp_path / "cells_seg.npy"
    assert labels.save(str(tif), plugin=PLUGIN) == [str(tif)]
    assert labels.save(str(npy), plugin=PLUGIN) == [str(npy)]
    for path in (tif, npy):
        new = viewer.open(str(path), plugin=PLUGIN)
        read = [layer for layer in new if layer.name == "cells_cp2_masks"]
        assert read, [layer.name for layer in new]
        np.testing.assert_array_equal(read[-1].data, sample.labels)
        viewer.layers.remove(read[-1])
    # a Cellpose _seg.npy with its image opens as image + labels
    seg = tmp_path / "other_seg.npy"
    cio.save_seg_npy(seg, image=sample.image.astype(np.float32), masks=sample.labels)
    names = [layer.name for layer in viewer.open(str(seg), plugin=PLUGIN)]
    assert names == ["other", "other_cp2_masks"]
    np.testing.assert_allclose(viewer.layers["other"].data, sample.image, rtol=1e-6)
    # saving again never clobbers the annotation on disk
    before = tif.read_bytes()
    with pytest.raises(Exception, match="exist"):
        viewer.layers["other_cp2_masks"].save(str(tif), plugin=PLUGIN)
    assert tif.read_bytes() == before


def test_z_stack_labels_save_and_open_as_seg_npy(make_napari_viewer, tmp_path):
    from cp2_engine.synthetic import touching_cells_3d

    viewer = make_napari_viewer()
    stack = touching_cells_3d((6, 40, 40), diameter=12, seed=2)
    labels = viewer.add_labels(stack.labels.astype(np.uint16), name="stack")
    npy = tmp_path / "stack_seg.npy"
    assert labels.save(str(npy), plugin=PLUGIN) == [str(npy)]
    new = viewer.open(str(npy), plugin=PLUGIN)
    read = [layer for layer in new if layer.name == "stack_cp2_masks"]
    assert read and read[-1].data.ndim == 3
    np.testing.assert_array_equal(read[-1].data > 0, stack.labels > 0)
    assert read[-1].data.max() == len(np.unique(stack.labels)) - 1


def _delete_two_draw_one(viewer, cor, labels_layer):
    """The human's corrections, through the Correct panel: delete two ROIs, draw one."""
    ids = [int(i) for i in np.unique(labels_layer.data) if i]
    for label in ids[:2]:
        assert cor.delete(label)
    from scipy.ndimage import binary_erosion

    # the centre of a background patch with room for a 9x9 square
    free = binary_erosion(np.asarray(labels_layer.data) == 0, np.ones((11, 11)))
    y, x = np.argwhere(free)[0]
    square = np.array([[y - 4, x - 4], [y - 4, x + 4], [y + 4, x + 4], [y + 4, x - 4]])
    cor._shapes.reset_choices()
    cor._shapes.value = viewer.add_shapes([square], shape_type="polygon", name="drawn")
    cor._add.native.click()
    return ids


def _wait_segmented(qtbot, seg, viewer, labels_name: str):
    qtbot.waitUntil(lambda: seg.task is not None and not seg.task.running, timeout=120_000)
    assert labels_name in viewer.layers, seg._status.value


@pytest.mark.parametrize("order", ["segment_then_project", "project_then_segment"])
def test_roi_accounting_matches_the_correct_panel(make_napari_viewer, qtbot, tmp_path, order):
    """The accepted record counts what the Correct panel showed, in either order."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    main = _open(viewer, "cp2")
    seg, cor, tr = main.segment, main.correct, main.train
    tr._folder.value = tmp_path / "project"
    tr._initial.value = "cp2_nuclei"
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 18.0
    image, masks = "dsb2018_fluo_nuclei", "dsb2018_fluo_nuclei_cp2_masks"

    if order == "project_then_segment":
        tr._open.native.click()
        assert tr._ws.project is not None
    seg._image.value = viewer.layers[image]
    seg._run.native.click()
    _wait_segmented(qtbot, seg, viewer, masks)
    if order == "segment_then_project":
        tr._open.native.click()
        assert tr._ws.project is not None

    assert cor._labels_layer.value is viewer.layers[masks]  # the panel follows the new prediction
    n_pred = int(len(np.unique(viewer.layers[masks].data)) - 1)
    assert n_pred >= 10
    _delete_two_draw_one(viewer, cor, viewer.layers[masks])
    shown = cor._counts.value
    assert shown == f"model {n_pred - 2} · edited 0 · drawn 1 · deleted 2"
    cor._accept.native.click()
    record = tr._ws.project.accounting(image)
    assert (record.n_accepted, record.n_edited, record.n_drawn, record.n_deleted) == (
        n_pred - 2,
        0,
        1,
        2,
    )
    assert f"{image}: {n_pred - 1} ROIs (1 by you)" in tr._accepted.value


def test_evaluate_defaults_follow_the_prediction(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    seg = _open(viewer, "Model & segment")
    ev = _open(viewer, "Evaluate")
    cor = _open(viewer, "Correct")
    truth = viewer.layers["dsb2018_fluo_nuclei_truth"]
    assert ev._truth.value is truth  # the sample's ground truth, not empty
    assert not ev._canvas.isVisible()  # no empty plot before an evaluation
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 18.0
    seg._run.native.click()
    _wait_segmented(qtbot, seg, viewer, "dsb2018_fluo_nuclei_cp2_masks")
    pred = viewer.layers["dsb2018_fluo_nuclei_cp2_masks"]
    assert ev._pred.value is pred and ev._truth.value is truth
    assert cor._labels_layer.value is pred
    ev._run.native.click()
    assert ev.result is not None and ev.result["ap"][0] > 0.5
    assert not ev._canvas.isHidden()


def test_hitl_loop_through_the_plugins_menu(
    make_napari_viewer, qtbot, tmp_path, notes, artifacts_dir
):
    """Open sample -> segment (bundled model) -> delete 2, draw 1 -> accept -> retrain 2 epochs
    in the worker -> the next image is segmented with the new model."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    viewer.open_sample(PLUGIN, "synthetic")
    seg = _open(viewer, "Model & segment")
    cor = _open(viewer, "Correct")
    tr = _open(viewer, "Train (human-in-the-loop)")
    first, second = "dsb2018_fluo_nuclei", "synthetic_fluo_cells"

    seg._image.value = viewer.layers[first]
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 18.0
    seg._run.native.click()
    _wait_segmented(qtbot, seg, viewer, f"{first}_cp2_masks")
    masks = viewer.layers[f"{first}_cp2_masks"]
    n_pred = int(len(np.unique(masks.data)) - 1)

    tr._folder.value = tmp_path / "project"
    tr._initial.value = "cp2_nuclei"
    tr._open.native.click()
    project = tr._ws.project
    assert project is not None and project.names == [first, second]

    _delete_two_draw_one(viewer, cor, masks)
    cor._accept.native.click()
    acc = project.accounting(first)
    assert (acc.n_accepted, acc.n_drawn, acc.n_deleted) == (n_pred - 2, 1, 2)

    tr._epochs.value = 2
    tr.extra_config = {"bsize": 96, "batch_size": 2, "min_images_per_epoch": 2}
    tr._retrain.native.click()
    task = tr.task
    assert task is not None and task.worker is not None  # a real worker thread
    ticks = _tick_until(qtbot, lambda: f"{second}_cp2_masks" in viewer.layers)
    assert not any(sev == "error" for sev, _ in notes), notes
    assert tr.last_record is not None and tr.last_record.round == 1
    new_model = str(tmp_path / "project" / tr.last_record.model)
    assert seg._model.value == new_model
    assert seg._ws.cache[second].model_key == new_model  # next image, new model
    ticks = ticks[ticks < task.finished_at]
    gap = float(np.max(np.diff(ticks)))
    (artifacts_dir / "menu_loop_gap.json").write_text(
        json.dumps({"worst_gap_s": gap, "ticks": len(ticks)})
    )
    print(f"worst event-loop gap during retraining: {gap * 1000:.0f} ms over {len(ticks)} ticks")
    # ticks during retraining prove it ran off the GUI thread; the bound catches a blocked loop
    assert len(ticks) > 5 and gap < 1.0, f"UI froze for {gap:.3f} s during retraining"


def _tick_until(qtbot, until, *, timeout_ms: int = 240_000) -> np.ndarray:
    """Run a 20 ms QTimer until ``until()``; return the tick times (s)."""
    from qtpy.QtCore import QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        qtbot.waitUntil(until, timeout=timeout_ms)
    finally:
        timer.stop()
    return np.asarray(ticks)


def test_precision_option_reaches_the_network(make_napari_viewer, qtbot):
    """The Segment tab's precision setting is what the segmentation ran with."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei")
    seg = _open(viewer, "cp2").segment
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 18.0
    seg._image.value = viewer.layers["dsb2018_fluo_nuclei"]
    assert seg._precision.value == "auto"
    seg._precision.value = "fp32"
    seg._run.native.click()
    _wait_segmented(qtbot, seg, viewer, "dsb2018_fluo_nuclei_cp2_masks")
    cached = seg._ws.cache["dsb2018_fluo_nuclei"].segmentation
    assert cached.config.precision == "fp32"
