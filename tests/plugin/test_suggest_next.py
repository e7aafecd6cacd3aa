"""The Train panel's "suggest next image" button, on the panel napari's Plugins menu builds:
the ranking runs in a worker, the most uncertain image is shown with its reason and selected."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("npe2")

pytestmark = pytest.mark.gui

DIAM = 16


def _images():
    from cp2_engine.synthetic import touching_cells

    good = [touching_cells((96, 96), diameter=DIAM, seed=s).image.astype(np.float32)
            for s in (3, 5)]  # fmt: skip
    rng = np.random.default_rng(0)
    bad = good[0].max() - good[0] + rng.normal(0, 1.5 * good[0].std(), good[0].shape)
    return {"good_a": good[0], "bad": bad.astype(np.float32), "good_b": good[1]}


def test_suggest_next_image_from_the_plugins_menu(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    for name, image in _images().items():
        viewer.add_image(image, name=name)
    _dock, tr = viewer.window.add_plugin_dock_widget("napari-cp2", "Train (human-in-the-loop)")

    tr._suggest.native.click()  # no project yet: an error notification, no task
    assert tr.suggest_task is None
    assert any(sev == "error" and "project" in msg for sev, msg in notes)
    notes.clear()

    tr._folder.value = tmp_path / "project"
    tr._initial.value = "cp2_nuclei"
    tr._open.native.click()
    project = tr._ws.project
    assert project is not None and project.next_image() == "good_a"
    viewer.layers.selection.active = viewer.layers["good_a"]

    tr._suggest.native.click()
    task = tr.suggest_task
    assert task is not None
    qtbot.waitUntil(lambda: not task.running and bool(tr.last_ranking), timeout=180_000)
    assert not any(sev == "error" for sev, _ in notes), notes
    assert [r.name for r in tr.last_ranking][:1] == ["bad"]
    text = tr._suggestion.value
    assert text.startswith("next: bad") and "masks" in text
    assert viewer.layers.selection.active.name == "bad"
    assert any("annotate 'bad' next" in msg for _, msg in notes)
    assert task not in tr._ws.tasks
    assert not list((project.folder / "predictions").iterdir())  # nothing was written
