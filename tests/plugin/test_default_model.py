"""The plugin opens projects with the engine's one default initial model."""

from __future__ import annotations

import numpy as np


def test_the_train_panel_defaults_to_the_engine_default(make_napari_viewer, tmp_path):
    from cp2_engine.hitl import DEFAULT_INITIAL_MODEL
    from napari_cp2 import _jobs as jobs

    image = np.zeros((16, 16), np.float32)
    assert jobs.open_project(tmp_path / "a", images={"x": image}).initial_model == (
        DEFAULT_INITIAL_MODEL
    )
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    _dock, tr = viewer.window.add_plugin_dock_widget("napari-cp2", "Train (human-in-the-loop)")
    assert tr._initial.value == DEFAULT_INITIAL_MODEL
    assert tr.open_project(tmp_path / "b").initial_model == DEFAULT_INITIAL_MODEL
