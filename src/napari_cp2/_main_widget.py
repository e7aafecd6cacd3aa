"""The "cp2" dock: the panels (segment, correct, train, evaluate, batch, measure & export) as
tabs of one widget."""

from __future__ import annotations

from qtpy.QtWidgets import QScrollArea, QTabWidget

from ._batch_widget import BatchWidget
from ._correct_widget import CorrectWidget
from ._evaluate_widget import EvaluateWidget
from ._measure_widget import MeasureWidget
from ._panel import Cp2Panel
from ._segment_widget import SegmentWidget
from ._train_widget import TrainWidget

__all__ = ["Cp2Widget"]

#: Tab titles, in the order of the human-in-the-loop workflow.
TABS = ("Segment", "Correct", "Train", "Evaluate", "Batch", "Measure")


class Cp2Widget(Cp2Panel):
    """One dock holding the cp2 panels as tabs, so the canvas keeps its width.

    The panels share the viewer's workspace, exactly as the separate widgets do; each
    tab scrolls on its own on a small screen. Takes the viewer, ``workspace`` and ``threaded``
    of :class:`~napari_cp2._panel.Cp2Panel` and hands them to every panel; the dock itself
    runs no job.
    """

    def _build(self) -> None:
        panel = {"workspace": self._ws, "threaded": self._threaded}
        self.segment = SegmentWidget(self._viewer, **panel)
        self.correct = CorrectWidget(self._viewer, **panel)
        self.train = TrainWidget(self._viewer, **panel)
        self.evaluate = EvaluateWidget(self._viewer, **panel)
        self.batch = BatchWidget(self._viewer, **panel)
        self.measure = MeasureWidget(self._viewer, **panel)
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
