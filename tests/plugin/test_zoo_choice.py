"""The "auto (zoo)" model entry: a zoo folder routes each image and the widget says where."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _tiny_zoo(folder):
    """A real zoo folder: two random-weight specialists, a style net, styles and labels."""
    from cp2_engine.inference import Model
    from cp2_engine.network import save_model
    from cp2_engine.zoo import ZooCluster, ZooManifest, save_zoo

    (folder / "models").mkdir(parents=True)
    for name, seed in (("style", 0), ("cluster0", 1), ("cluster1", 2)):
        save_model(Model.random(seed=seed).net, folder / "models" / f"{name}.pth")
    clusters = tuple(
        ZooCluster(id=i, name=f"cluster{i}", model=f"models/cluster{i}.pth", diam_mean=30.0,
                   diam_labels=30.0, n_images=3)
        for i in (0, 1)
    )  # fmt: skip
    rng = np.random.default_rng(0)
    styles = rng.normal(size=(6, 256)).astype(np.float32)
    styles /= np.linalg.norm(styles, axis=1, keepdims=True)
    manifest = ZooManifest(clusters=clusters, style_model="models/style.pth")
    save_zoo(folder, manifest, styles=styles, labels=[0, 0, 0, 1, 1, 1])
    return folder


def test_zoo_folder_is_offered_as_auto_and_reports_its_route(make_napari_viewer, tmp_path, notes):
    from cp2_engine.synthetic import touching_cells
    from napari_cp2._segment_widget import SegmentWidget
    from napari_cp2._workspace import Cp2Workspace

    zoo = _tiny_zoo(tmp_path / "myzoo")
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer, workspace=Cp2Workspace(), threaded=False)
    viewer.add_image(touching_cells((96, 96), diameter=30, seed=1).image, name="cells")
    assert widget.add_zoo(tmp_path / "not_a_zoo") is None
    assert any("zoo" in text for _, text in notes)
    key = widget.add_zoo(zoo)
    assert key == f"zoo:{zoo}"
    assert ("auto (zoo: myzoo)", key) in widget._model_choices()
    widget._model.value = key
    widget.run(viewer.layers["cells"])
    assert "cells_cp2_masks" in viewer.layers
    assert "routed to cluster" in widget._status.value


def test_zoo_thresholds_and_diameter_estimate_from_the_menu(make_napari_viewer, tmp_path, notes):
    """With "auto (zoo)" chosen, the threshold sliders recompute masks with the routed
    specialist, and "estimate diameter" answers (here: the specialist has no size model)."""
    from cp2_engine.synthetic import touching_cells

    zoo = _tiny_zoo(tmp_path / "myzoo")
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-cp2", "Model & segment")
    widget._threaded = False
    viewer.add_image(touching_cells((96, 96), diameter=30, seed=1).image, name="cells")
    widget._model.value = widget.add_zoo(zoo)
    widget._cellprob.value = -6.0
    widget.run(viewer.layers["cells"])
    first = widget._ws.cache["cells"].segmentation
    widget._cellprob.value = 6.0  # the slider alone triggers a mask recompute
    assert not [text for sev, text in notes if sev == "error"], notes
    again = widget._ws.cache["cells"].segmentation
    assert again is not first and again.config.cellprob_threshold == 6.0
    assert again.route == first.route  # the same specialist recomputed its own flows
    widget.estimate_diameter()
    errors = [text for sev, text in notes if sev == "error"]
    assert errors and "size model" in errors[-1], notes
    assert "has no attribute" not in " ".join(errors)
