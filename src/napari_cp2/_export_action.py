"""The Train panel's "Export model…" action: the project's latest retrained model becomes a
BioImage.IO package (file dialog, export and ``bioimageio test`` in a worker, progress, result)."""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info, show_warning

from ._jobrunner import JobRunner
from ._workers import Task

__all__ = ["ExportAction", "ask_save_path", "export_job"]

logger = logging.getLogger(__name__)

TOOLTIP = (
    "Write the project's latest retrained model as a BioImage.IO model package (.zip: "
    "pytorch_state_dict, TorchScript and ONNX weights, test tensors from the first accepted "
    "image, README with citations) and run bioimageio's own test on each weight format. "
    "Fiji/deepImageJ, QuPath, ilastik and bioimageio.core can run it; cp2 loads it back as a "
    "model file."
)


def ask_save_path(parent, default: str) -> str:
    """Ask where to write the package (Qt save dialog; it confirms replacing a file)."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(
        parent, "Export model as a BioImage.IO package", default, "BioImage.IO package (*.zip)"
    )
    return path


def export_job(model: str, out: Path, *, sample, diameter) -> Generator:
    """Export ``model`` to ``out`` (replacing it: the dialog asked) and test it; yields the
    engine's ``ExportProgress`` events, returns its ``ExportResult``."""
    from cp2_engine.export import iter_export_bioimageio

    result = yield from iter_export_bioimageio(
        model, out, sample=sample, diameter=diameter, overwrite=True
    )
    return result


class ExportAction(Container):
    """ "Export model…" button, progress bar and result line of the Train panel.

    The export runs through the plugin's one job lifecycle (:class:`~napari_cp2._jobrunner.
    JobRunner`): one at a time, registered in the workspace, errors as notifications.

    Parameters
    ----------
    workspace : Cp2Workspace
        The plugin state (the open project; running tasks are registered there).
    threaded : bool, optional
        Run the export in a worker thread (default unless ``CP2_NAPARI_NOTHREADS`` is set).
    """

    def __init__(self, workspace, *, threaded=None) -> None:
        super().__init__(labels=False)
        self._ws = workspace
        #: The last export's ``ExportResult``.
        self.result = None
        self._button = PushButton(text="Export model…", tooltip=TOOLTIP)
        self._progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self._status = Label(value="")
        self.extend([self._button, self._progress, self._status])
        self._jobs = JobRunner(
            workspace, progress=self._progress, status=self._status, threaded=threaded
        )
        self._button.changed.connect(lambda: self.export())

    @property
    def task(self) -> Task | None:
        """The last (or running) export."""
        return self._jobs.task

    def _source(self):
        """(model path, sample image, diameter) of the open project, or None after a message."""
        project = self._ws.project
        if project is None:
            show_error("cp2: open a project first (Train panel, 'Open project').")
            return None
        if not project.rounds:
            show_error("cp2: no retrained model yet: retrain first, then export it.")
            return None
        names = project.accepted_names() or project.names
        return str(project.folder / project.rounds[-1]), project.image(names[0]), project.diameter

    def export(self, path=None) -> Task | None:
        """Export the latest retrained model to ``path`` (None: ask with a save dialog)."""
        if self._jobs.busy():
            return None
        source = self._source()
        if source is None:
            return None
        model, sample, diameter = source
        if path is None:
            path = ask_save_path(self.native, str(Path(model).with_suffix(".zip")))
            if not path:
                return None
        path = Path(path).with_suffix(".zip")
        self._progress.visible = True
        return self._jobs.start(
            export_job(model, path, sample=sample, diameter=diameter),
            name="model export",
            on_done=self._on_done,
            on_error=lambda _err: self._hide_progress(),
            on_cancel=self._hide_progress,
        )

    def _hide_progress(self) -> None:
        self._progress.visible = False

    def _on_done(self, result) -> None:
        self._hide_progress()
        self.result = result
        lines = [f"wrote {result.path.name} ({result.export_seconds:.0f} s)"]
        lines += [f"bioimageio test {t.weight_format}: {'passed' if t.passed else 'FAILED'}"
                  for t in result.tests]  # fmt: skip
        self._status.value = "\n".join(lines)
        (show_info if result.passed else show_warning)(f"cp2: {result.summary()}")
