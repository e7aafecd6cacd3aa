"""Viewer-free tests of the plugin helpers: layers, edits, tasks, io, sample data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cp2._edits import EditHistory, add_rois, delete_roi, merge_rois, relabel_roi
from napari_cp2._layers import diameter_from_shapes, prepare_image, segmentation_layers
from napari_cp2._workers import Task


def _two_disks():
    yy, xx = np.indices((40, 40))
    lab = np.zeros((40, 40), np.uint16)
    lab[np.hypot(yy - 20, xx - 11) < 8] = 1
    lab[np.hypot(yy - 20, xx - 27) < 8] = 2  # a 1-px gap between the disks
    return lab


def test_prepare_image_channels_and_errors():
    rng = np.random.default_rng(0)
    rgb = rng.random((16, 16, 3))
    rgb[..., 2] = 0
    out = prepare_image(rgb, name="x", rgb=True, channels=(2, 1))
    assert out.image.shape == (16, 16, 3) and out.channels == (2, 1) and out.channel_axis == 2
    with pytest.raises(ValueError, match="is empty"):
        prepare_image(rgb, name="x", rgb=True, channels=(3, 0))
    with pytest.raises(ValueError, match="does not exist"):
        prepare_image(rgb, name="x", rgb=True, channels=(5, 0))
    with pytest.raises(ValueError, match="has shape"):
        prepare_image(rng.random((5, 16, 16)), name="z", channels=(0, 0))
    cyx = prepare_image(rng.random((2, 16, 16)), name="c", channel_axis=0, channels=(1, 2))
    assert cyx.image.shape == (16, 16, 2)


def test_flows_layer_shows_the_seg_npy_flow_colours(tmp_path):
    from cp2_engine.inference import Segmentation, SegmentConfig
    from cp2_engine.io import load_seg_npy, save_seg_npy
    from cp2_engine.postprocess import masks_to_flows

    masks = _two_disks()
    seg = Segmentation(
        masks=masks,
        flows=5 * masks_to_flows(masks),
        cellprob=np.where(masks > 0, 4.0, -4.0).astype(np.float32),
        style=np.zeros(256, np.float32),
        diameter=16.0,
        rescale=30.0 / 16.0,
        niter=200,
        config=SegmentConfig(),
    )
    layers = segmentation_layers(seg, image_name="cells")
    (flows_rgb, meta, kind) = layers[1]
    assert kind == "image" and meta["rgb"] and meta["name"] == "cells_cp2_flows"
    out = save_seg_npy(
        tmp_path / "cells.tif",
        image=np.zeros(masks.shape),
        masks=seg.masks,
        flows=seg.flows,
        cellprob=seg.cellprob,
    )
    seg_rgb = load_seg_npy(out)["flows"][0]  # (1, H, W, 3) as the Cellpose GUI stores it
    np.testing.assert_array_equal(flows_rgb, seg_rgb[0])
    assert len(np.unique(flows_rgb.reshape(-1, 3), axis=0)) > 10  # a real picture, not blank


def test_edits_delete_merge_relabel_add():
    lab = _two_disks()
    assert 2 not in delete_roi(lab, 2)
    merged = merge_rois(lab, 1, 2)
    assert set(np.unique(merged)) == {0, 1} and (merged == 1).sum() > (lab > 0).sum()
    relabelled, new = relabel_roi(lab, 1)
    assert new == 3 and np.array_equal(relabelled == 3, lab == 1)
    mask = np.zeros((1, 40, 40), bool)
    mask[0, 15:25, 15:25] = True  # overlaps both disks: only free pixels become the new ROI
    added, ids = add_rois(lab, mask)
    assert ids == [3] and np.array_equal(added[lab > 0], lab[lab > 0])
    assert (added == 3).sum() == (mask[0] & (lab == 0)).sum()
    with pytest.raises(ValueError, match="no ROI 7"):
        delete_roi(lab, 7)


def test_history_is_bounded():
    h = EditHistory(limit=2)
    for i in range(4):
        h.push("m", np.full(2, i))
    assert h.pop("m").tolist() == [3, 3] and h.pop("m").tolist() == [2, 2]
    assert h.pop("m") is None


def test_diameter_from_shapes():
    rect = np.array([[0, 0], [0, 10], [20, 10], [20, 0]])
    assert diameter_from_shapes([rect, rect * 2]) == pytest.approx(22.5)
    with pytest.raises(ValueError):
        diameter_from_shapes([])


def test_task_sync_cancel_and_error():
    def job():
        yield from range(5)
        return "done"

    seen, done, cancelled = [], [], []
    task = Task(job(), name="t", threaded=False, on_done=done.append)
    task._on_yield = lambda i: (seen.append(i), task.cancel() if i == 1 else None)
    task._on_cancel = lambda: cancelled.append(True)
    task.start()
    assert seen == [0, 1] and done == [] and cancelled == [True]
    assert not task.cancel()  # cancelling twice is a no-op

    def bad():
        yield 0
        raise RuntimeError("boom")

    errors = []
    Task(bad(), name="b", threaded=False, on_error=errors.append).start()
    assert isinstance(errors[0], RuntimeError)


def test_sample_data_offline():
    from napari_cp2._sample_data import load_sample

    layers = load_sample("synthetic")
    image, truth = layers[0][0], layers[1][0]
    assert image.shape == truth.shape and truth.max() > 5


def test_masks_reader_round_trip(tmp_path):
    from napari_cp2._io import get_reader, write_masks_tif

    lab = _two_disks()
    path = write_masks_tif(str(tmp_path / "cells.tif"), lab, {})[0]
    assert path.endswith("cells_masks.tif")
    data, meta, kind = get_reader(path)(path)[0]
    assert kind == "labels" and meta["name"] == "cells_cp2_masks"
    np.testing.assert_array_equal(data, lab)


def test_threaded_task_tunes_the_allocator_before_starting_its_thread(qtbot, monkeypatch):
    # a worker thread that allocated before M_ARENA_MAX=1 kept its own malloc arena, where the
    # network's buffers were re-mapped at every pass (about 8% of a segmentation)
    import threading

    import cp2_engine.util

    calls = []
    monkeypatch.setattr(  # the public name the plugin calls
        cp2_engine.util,
        "tune_allocator",
        lambda: calls.append(threading.current_thread()),
    )
    done = []

    def job():
        yield 1
        return 2

    Task(job(), name="t", threaded=True, on_done=done.append).start()
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert done == [2] and calls == [threading.main_thread()]
