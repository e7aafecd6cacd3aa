"""z-stacks in the plugin: the 3-D sample, the Segment panel's '3-D (z-stack)' mode, 3-D layers,
and the Correct panel's edits on 3-D labels (issue 18, step 6)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cp2._edits import add_rois, delete_roi, merge_rois
from napari_cp2._layers import prepare_image, segmentation_layers

PLUGIN = "napari-cp2"


# ----------------------------------------------------------------------- viewer-free helpers
def test_prepare_image_stacks():
    rng = np.random.default_rng(0)
    zyx = rng.random((5, 16, 20))
    with pytest.raises(ValueError, match=r"3-D \(z-stack\)"):  # the box is off: refused
        prepare_image(zyx, name="z")
    out = prepare_image(zyx, name="z", stack=True, channels=(1, 0))
    assert out.stack and out.image.shape == (5, 16, 20) and out.channel_axis is None
    assert out.channels == (0, 0)
    moved = prepare_image(zyx, name="z", stack=True, z_axis=2)  # z labelled on the last axis
    assert moved.image.shape == (20, 5, 16)
    zcyx = rng.random((5, 2, 16, 20))
    out = prepare_image(zcyx, name="c", stack=True, channel_axis=1, channels=(1, 2))
    assert out.image.shape == (5, 16, 20, 2) and out.channel_axis == 3
    np.testing.assert_array_equal(out.image[..., 1], zcyx[:, 1])
    czyx = prepare_image(np.moveaxis(zcyx, 1, 0), name="c", stack=True, channel_axis=0)
    np.testing.assert_array_equal(czyx.image, out.image)
    rgb = prepare_image(rng.random((5, 16, 20, 4)), name="rgb", rgb=True, stack=True)
    assert rgb.image.shape == (5, 16, 20, 3) and rgb.channel_axis == 3
    with pytest.raises(ValueError, match="channel axis"):  # 4-D without a channel axis
        prepare_image(zcyx, name="c", stack=True)
    with pytest.raises(ValueError, match="does not exist"):
        prepare_image(zcyx, name="c", stack=True, channel_axis=1, channels=(3, 0))


def test_segmentation_layers_of_a_stack():
    masks = np.zeros((4, 10, 12), np.uint16)
    masks[1:3, 2:6, 2:6] = 1
    flows = np.random.default_rng(1).normal(size=(3, 4, 10, 12)).astype(np.float32)
    seg = SimpleNamespace(masks=masks, flows=flows, cellprob=np.zeros(masks.shape),
                          diameter=12.0)  # fmt: skip
    layers = segmentation_layers(seg, image_name="s", scale=(1, 2.0, 1, 1))
    assert [t[0].shape for t in layers] == [(4, 10, 12), (4, 10, 12, 3), (4, 10, 12)]
    assert all(meta["scale"] == (2.0, 1, 1) for _, meta, _ in layers)
    assert layers[1][1]["rgb"] and not layers[2][1]["visible"]


def test_edits_on_3d_labels():
    lab = np.zeros((6, 20, 20), np.uint16)
    lab[1:5, 2:9, 2:9] = 1
    lab[1:5, 2:9, 10:17] = 2  # one background column between them
    lab[2, 15:18, 15:18] = 3
    merged = merge_rois(lab, 1, 2)
    assert set(np.unique(merged)) == {0, 1, 3}
    assert (merged[1:5, 2:9, 9] == 1).all()  # the gap is closed in every plane
    assert not (delete_roi(merged, 3) == 3).any()
    drawn = np.zeros((1, *lab.shape), bool)
    drawn[0, 5, 10:14, 2:6] = True
    out, ids = add_rois(lab, drawn)
    assert ids == [4] and (out == 4).sum() == 16


# ------------------------------------------------------------------------ through napari
pytest.importorskip("npe2")


@pytest.mark.gui
def test_zstack_sample_segments_in_3d(make_napari_viewer, notes):
    """File > Open Sample > z-stack, Plugins > Model & segment, '3-D (z-stack)' on, Run."""
    from napari.layers import Image, Labels

    from cp2_engine.metrics import average_precision

    viewer = make_napari_viewer()
    image, truth = viewer.open_sample(PLUGIN, "zstack")
    assert isinstance(image, Image) and isinstance(truth, Labels)
    assert image.data.shape == truth.data.shape == (24, 128, 128)
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Model & segment")
    seg._threaded = False
    seg._image.value = image
    assert seg._channel_axis.value == -1
    assert seg._anisotropy.value == 2.0  # from the layer's scale (2, 1, 1)
    seg._model.value = "cp2_nuclei"
    seg._diameter.value = 20.0

    seg._run.native.click()  # box off: refused with a message naming the 3-D option
    masks_name = f"{image.name}_cp2_masks"
    assert masks_name not in viewer.layers
    assert any(sev == "error" and "3-D (z-stack)" in msg for sev, msg in notes), notes

    seg._do_3d.value = True
    seg._run.native.click()
    assert masks_name in viewer.layers, seg._status.value
    masks = viewer.layers[masks_name]
    assert isinstance(masks, Labels) and masks.data.shape == (24, 128, 128)
    assert tuple(masks.scale) == (2.0, 1.0, 1.0)
    assert viewer.layers[f"{image.name}_cp2_flows"].data.shape == (24, 128, 128, 3)
    assert not viewer.layers[f"{image.name}_cp2_cellprob"].visible
    ap = average_precision(truth.data, masks.data, thresholds=(0.5,)).ap[0, 0]
    assert ap >= 0.8, ap
    assert seg._ws.cache[image.name].segmentation.config.do_3d

    # stitched 2-D planes instead of true 3-D
    seg._stitch.value = 0.25
    seg._run.native.click()
    assert seg._ws.cache[image.name].segmentation.flows.shape == (2, 24, 128, 128)

    # the Correct panel follows the 3-D prediction; delete and merge work in 3-D
    _, cor = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct")
    cor._labels_layer.value = masks
    ids = [int(i) for i in np.unique(masks.data) if i]
    n = len(ids)
    assert cor.delete(ids[0])
    assert cor.merge(ids[1], ids[2])
    assert len(np.unique(masks.data)) - 1 == n - 2
    assert cor._counts.value.endswith("deleted 2")  # the merged-away ROI and the deleted one
    viewer.dims.set_point(0, 10 * 2.0)  # plane 10 (world z = 10 * anisotropy)
    free = np.argwhere(np.asarray(masks.data[10]) == 0)[0]
    square = free + np.array([[0, 0], [0, 2], [2, 2], [2, 0]])
    shapes = viewer.add_shapes([square], shape_type="polygon", name="drawn", ndim=2)
    cor._shapes.reset_choices()
    cor._shapes.value = shapes
    new = cor.add_from_shapes()
    assert len(new) == 1
    zs = np.unique(np.argwhere(np.asarray(masks.data) == new[0])[:, 0])
    assert zs.tolist() == [10]
    assert cor.undo() and cor.undo()
    assert len(np.unique(masks.data)) - 1 == n - 1


@pytest.mark.gui
def test_correct_panel_accepts_3d_labels_into_a_stack_project(make_napari_viewer, tmp_path):
    from cp2_engine.hitl import HitlProject

    viewer = make_napari_viewer()
    image, truth = viewer.open_sample(PLUGIN, "zstack")
    project = HitlProject.create(tmp_path / "p", images=[image.data], names=[image.name],
                                 stacks=True, initial_model="scratch")  # fmt: skip
    _, cor = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct")
    cor._ws.set_project(project)
    labels = viewer.add_labels(np.asarray(truth.data), name=f"{image.name}_cp2_masks")
    cor._labels_layer.value = labels
    n = int(labels.data.max())
    assert cor.delete(1)
    acc = cor.accept()
    assert acc is not None and (acc.n_drawn, acc.n_deleted) == (n - 1, 0)  # no prediction
    assert project.corrected(image.name).shape == (24, 128, 128)
