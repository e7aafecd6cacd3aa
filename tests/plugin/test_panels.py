"""Every cp2 panel, opened from napari's Plugins menu, is a working magicgui ``Container``: its
rows keep their labels (no panel attribute shadows the container's own, as the Correct panel's
``_labels`` once did, hiding every row label), and the panels share one job lifecycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from magicgui.widgets import Container
from magicgui.widgets.bases import ButtonWidget

npe2 = pytest.importorskip("npe2")

pytestmark = pytest.mark.gui

PLUGIN = "napari-cp2"
ROOT = Path(__file__).resolve().parents[2]
WIDGETS = [
    w.display_name
    for w in npe2.PluginManifest.from_file(ROOT / "napari.yaml").contributions.widgets
]


def _panels(widget):
    return widget.panels() if hasattr(widget, "panels") else (widget,)


def _row_labels(panel) -> set[str]:
    """The texts of the row labels the panel shows (magicgui's labelled rows, as QLabels)."""
    from qtpy.QtWidgets import QLabel

    return {label.text() for label in panel.native.findChildren(QLabel)}


def test_correct_panel_shows_its_row_labels_and_edits_its_layer(make_napari_viewer):
    from napari_cp2._tooltips import LABELS

    viewer = make_napari_viewer()  # no labels layer yet: the layer list is empty
    _dock, cor = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct")
    assert cor.labels is True
    shown = _row_labels(cor)
    for key in ("labels", "draw_shapes", "merge_a", "merge_b", "relabel_id"):
        assert LABELS[key] in shown, (key, shown)

    masks = np.zeros((32, 32), np.uint16)
    masks[2:10, 2:10], masks[20:30, 20:30] = 1, 2
    layer = viewer.add_labels(masks, name="cells_cp2_masks")
    cor.reset_choices()
    cor._labels_layer.value = layer  # the panel's labels layer, under its own name
    assert cor.delete(1)
    assert set(np.unique(layer.data)) == {0, 2}
    assert cor.labels is True and LABELS["labels"] in _row_labels(cor)


def test_no_panel_shadows_a_container_attribute(make_napari_viewer):
    """A panel's own attributes never replace magicgui ``Container`` attributes (``_labels``,
    ``_list``, ``_layout``, ``options``, ...); only ``reset_choices`` is extended on purpose."""
    viewer = make_napari_viewer()
    plain = Container()
    # (every ABC subclass gets its own ``_abc_impl``: not a panel attribute)
    plain_attrs = {n for n in dir(plain) if not n.startswith("__")} - {"_abc_impl"}
    for name in WIDGETS:
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        for panel in _panels(widget):
            assert panel.labels is True, name
            for attr, value in vars(plain).items():  # the container's own state
                ours = type(vars(panel)[attr])
                assert ours is type(value), (type(panel).__name__, attr, ours)
            overridden = {
                attr
                for cls in type(panel).__mro__
                if cls.__module__.startswith("napari_cp2")
                for attr in vars(cls)
                if attr in plain_attrs
            }
            assert overridden <= {"reset_choices"}, (type(panel).__name__, overridden)


def test_every_panel_with_jobs_has_one_cancel_progress_and_status(make_napari_viewer):
    """Segment, Train and Batch lay out the Cancel button, progress bar and status line of
    their one job runner; Cancel with nothing running says so and cancels nothing."""
    from magicgui.widgets import Label, ProgressBar

    viewer = make_napari_viewer()
    _dock, main = viewer.window.add_plugin_dock_widget(PLUGIN, "cp2")
    for panel in (main.segment, main.train, main.batch):
        widgets = panel.job_widgets()
        assert [type(w) for w in widgets[1:]] == [ProgressBar, Label]
        assert isinstance(widgets[0], ButtonWidget) and widgets[0].text == "Cancel"
        assert all(w in list(panel) for w in widgets), type(panel).__name__
        assert panel.task is None
        widgets[0].native.click()  # nothing runs: a message, no task
        assert panel.task is None and panel._progress.value == 0
