"""The base of every cp2 panel: the viewer, its workspace and the panel's job lifecycle.

Each widget of the plugin (the Segment, Correct, Train, Evaluate, Batch and Measure panels, and
the dock holding them as tabs) is a :class:`Cp2Panel`. The base takes the viewer napari passes,
finds the viewer's shared :class:`~napari_cp2._workspace.Cp2Workspace`, and owns the panel's
:class:`~napari_cp2._jobrunner.JobRunner`; a panel with long jobs asks for the Cancel button,
progress bar and status line that follow that runner (:meth:`Cp2Panel.job_widgets`).
"""

from __future__ import annotations

from typing import ClassVar

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.viewer import Viewer

from ._jobrunner import JobRunner
from ._tooltips import LABELS, labelled
from ._workers import Task
from ._workspace import Cp2Workspace, workspace_for

__all__ = ["Cp2Panel"]


class Cp2Panel(Container):
    """A cp2 panel: a magicgui ``Container`` bound to a viewer and its workspace.

    A subclass sets :attr:`_progress_label` when it runs long jobs (it then gets a Cancel
    button, a progress bar and a status line that follow its jobs: lay them out with
    :meth:`job_widgets`) and creates its own widgets in :meth:`_build`, which the base calls
    once the viewer, workspace and job runner are set. Subclasses keep the attribute names of
    magicgui's ``Container`` free (``labels`` / ``_labels``, ``layout``, ``name``, ``options``,
    ...): a panel attribute of the same name breaks the container (an attribute ``_labels``
    hides every row label).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer to work in (napari passes it by this name when the widget is opened
        from the Plugins menu).
    workspace : Cp2Workspace, optional
        Shared plugin state (default: the viewer's own).
    threaded : bool, optional
        Run jobs in a worker thread (default unless ``CP2_NAPARI_NOTHREADS`` is set).

    Examples
    --------
    >>> class FakeViewer: ...
    >>> class Demo(Cp2Panel):
    ...     _progress_label = "images"
    ...
    ...     def _build(self):
    ...         self.extend(self.job_widgets())
    >>> panel = Demo(FakeViewer(), threaded=False)
    >>> [type(w).__name__ for w in panel], panel.labels, panel.task is None
    (['PushButton', 'ProgressBar', 'Label'], True, True)
    """

    #: Label of the job's progress bar; None: the panel has no job widgets.
    _progress_label: ClassVar[str | None] = None

    def __init__(
        self,
        napari_viewer: Viewer,
        *,
        workspace: Cp2Workspace | None = None,
        threaded: bool | None = None,
    ) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self._ws = workspace if workspace is not None else workspace_for(napari_viewer)
        self._cancel: PushButton | None = None
        self._progress: ProgressBar | None = None
        self._status: Label | None = None
        if self._progress_label is not None:
            self._cancel = labelled(PushButton(text=LABELS["cancel"]), "cancel")
            self._progress = ProgressBar(value=0, min=0, max=1, label=self._progress_label)
            self._status = Label(value="")
            self._cancel.changed.connect(lambda: self.cancel())
        self._jobs = JobRunner(
            self._ws, progress=self._progress, status=self._status, threaded=threaded
        )
        self._build()

    def _build(self) -> None:
        """Create the panel's widgets and connect them (each panel its own)."""

    def job_widgets(self) -> list:
        """The Cancel button, progress bar and status line (none without a progress label)."""
        return [w for w in (self._cancel, self._progress, self._status) if w is not None]

    @property
    def task(self) -> Task | None:
        """The panel's last (or running) job."""
        return self._jobs.task

    @property
    def _threaded(self) -> bool | None:
        """Whether jobs run in a worker thread (None: unless ``CP2_NAPARI_NOTHREADS`` is set)."""
        return self._jobs.threaded

    @_threaded.setter
    def _threaded(self, value: bool | None) -> None:
        self._jobs.threaded = value

    def cancel(self) -> bool:
        """Cancel the running job at its next progress event; say so when nothing runs.

        What a cancelled job keeps is the engine's: a batch keeps the finished images, a
        retraining leaves the project's previous model, a segmentation adds no layer.
        """
        return self._jobs.cancel()
