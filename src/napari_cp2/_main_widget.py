"""The "cp2" dock: the panels (segment, correct, train, evaluate, batch, measure & export) as
tabs of one widget."""

from __future__ import annotations

from magicgui.widgets import Container
from napari.viewer import Viewer
from qtpy.QtWidgets import QScrollArea, QTabWidget

from ._batch_widget import BatchWidget
from ._correct_widget import CorrectWidget
from ._evaluate_widget import EvaluateWidget
from ._measure_widget import MeasureWidget
from ._segment_widget import SegmentWidget
from ._train_widget import TrainWidget
from ._workspace import Cp2Workspace, workspace_for

__all__ = ["Cp2Widget"]

#: Tab titles, in the order of the human-in-the-loop workflow.
TABS = ("Segment", "Correct", "Train", "Evaluate", "Batch", "Measure")


class Cp2Widget(Container):
    """One dock holding the cp2 panels as tabs, so the canvas keeps its width.

    The panels share the viewer's workspace, exactly as the separate widgets do; each
    tab scrolls on its own on a small screen.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer to work in (napari passes it by this name when the widget is opened
        from the Plugins menu).
    workspace : Cp2Workspace, optional
        Shared plugin state (default: the viewer's own).
    threaded : bool, optional
        Run jobs in worker threads (default unless ``CP2_NAPARI_NOTHREADS`` is set).
    """

    def __init__(
        self, napari_viewer: Viewer, *, workspace: Cp2Workspace | None = None, threaded=None
    ) -> None:
        super().__init__()
        ws = workspace if workspace is not None else workspace_for(napari_viewer)
        self.segment = SegmentWidget(napari_viewer, workspace=ws, threaded=threaded)
        self.correct = CorrectWidget(napari_viewer, workspace=ws)
        self.train = TrainWidget(napari_viewer, workspace=ws, threaded=threaded)
        self.evaluate = EvaluateWidget(napari_viewer, workspace=ws)
        self.batch = BatchWidget(napari_viewer, workspace=ws, threaded=threaded)
        self.measure = MeasureWidget(napari_viewer, workspace=ws)
        self.tabs = QTabWidget()
        for title, panel in zip(TABS, self.panels(), strict=True):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(panel.native)
            self.tabs.addTab(scroll, title)
        self.native.layout().addWidget(self.tabs)

    def panels(self) -> tuple:
        """The panels, in tab order."""
        return self.segment, self.correct, self.train, self.evaluate, self.batch, self.measure

    def reset_choices(self, *_args) -> None:
        """Refresh every panel's layer and model lists (napari calls this on layer changes)."""
        for panel in self.panels():
            panel.reset_choices()
