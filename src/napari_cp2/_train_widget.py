"""The "Train" widget: the HITL project, accepted images, and background retraining."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from napari.layers import Image
from napari.utils.notifications import show_error, show_info

from . import _jobs as jobs
from ._export_action import ExportAction
from ._jobrunner import JobRunner
from ._layers import layer_names
from ._panel import Cp2Panel
from ._tooltips import LABELS, message
from ._tooltips import labelled as _w

__all__ = ["TrainWidget", "project_name"]

logger = logging.getLogger(__name__)

#: The paper's online (human-in-the-loop) defaults.
DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_WD = 100, 0.1, 1e-4


def project_name(layer_name: str) -> str:
    """A project image name (letters, digits, ``._-``) made from a layer name.

    Examples
    --------
    >>> project_name("my cells (1)")
    'my_cells_1'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", layer_name).strip("_.-")
    return name or "image"


def _default_choice(choices) -> str:
    """The engine's default initial model when it is offered, else the first choice."""
    from cp2_engine.hitl import DEFAULT_INITIAL_MODEL

    return DEFAULT_INITIAL_MODEL if DEFAULT_INITIAL_MODEL in choices else choices[0]


class TrainWidget(Cp2Panel):
    """Open/create a HITL project and retrain its model in the background.

    Takes the viewer, ``workspace`` and ``threaded`` of :class:`~napari_cp2._panel.Cp2Panel`;
    Cancel stops the retraining (the project keeps its previous model).
    """

    _progress_label = "epochs"

    def _build(self) -> None:
        self.last_record = None
        #: The last "suggest next image" ranking (``ImageScore`` list, most uncertain first).
        self.last_ranking: list = []
        self._last_loss = float("nan")
        #: Extra TrainConfig fields (e.g. a small ``bsize`` for quick tests).
        self.extra_config: dict = {}
        self._folder = _w(FileEdit(mode="d"), "project")
        self._open = _w(PushButton(text=LABELS["open_project"]), "open_project")
        self._initial = _w(ComboBox(choices=self._initial_choices), "initial_model")
        self._initial.value = _default_choice(self._initial.choices)
        self._epochs = _w(SpinBox(value=DEFAULT_EPOCHS, min=1, max=10000), "epochs")
        self._lr = _w(FloatSpinBox(value=DEFAULT_LR, min=1e-5, max=10.0, step=0.01), "lr")
        self._wd = _w(FloatSpinBox(value=DEFAULT_WD, min=0.0, max=1.0, step=1e-5), "weight_decay")
        self._accepted = Label(value="no project")
        self._suggest = _w(PushButton(text=LABELS["suggest_next"]), "suggest_next")
        self._suggestion = Label(value="")
        self._retrain = _w(PushButton(text=LABELS["retrain"]), "retrain")
        self._progress.max = DEFAULT_EPOCHS
        #: "Export model…": the latest retrained model as a BioImage.IO package.
        self.export_action = ExportAction(self._ws, threaded=self._threaded)
        self.extend(
            [self._folder, self._open, self._initial, self._epochs, self._lr, self._wd,
             self._accepted, self._suggest, self._suggestion, self._retrain, *self.job_widgets(),
             self.export_action]
        )  # fmt: skip
        self._suggest_jobs = JobRunner(self._ws, status=self._suggestion, threaded=self._threaded)
        self._open.changed.connect(lambda: self.open_project(self._folder.value))
        self._suggest.changed.connect(lambda: self.suggest_next())
        self._retrain.changed.connect(lambda: self.retrain())
        self._ws.image_accepted.connect(lambda _name: self.refresh())
        jobs.preload_training()

    @property
    def suggest_task(self) -> jobs.Task | None:
        """The last (or running) ranking of the next image."""
        return self._suggest_jobs.task

    def _initial_choices(self, _widget=None) -> list[tuple[str, str]]:
        try:
            choices = jobs.model_choices()
        except (ImportError, OSError, ValueError) as err:
            logger.warning("cp2: model registry unavailable: %s", err)
            choices = []
        return [*choices, ("scratch (random weights)", "scratch")]

    # --------------------------------------------------------------------- project
    def _viewer_images(self) -> dict[str, np.ndarray]:
        out = {}
        for layer in self._viewer.layers:
            is_2d = isinstance(layer, Image) and (layer.ndim == 2 or layer.rgb)
            ours = layer.name.endswith(("_cp2_flows", "_cp2_cellprob"))
            if is_2d and not ours:
                out[project_name(layer.name)] = np.asarray(layer.data)
        return out

    def open_project(self, folder, *, initial_model: str | None = None):
        """Open the project in ``folder``, or create it from the viewer's 2-D images."""
        if folder is None or not str(folder).strip() or str(folder) == ".":
            show_error(message("no_project"))
            return None
        initial = initial_model or self._initial.value  # None: the engine's default
        try:
            project = jobs.open_project(
                Path(folder), images=self._viewer_images(), initial_model=initial
            )
        except (ValueError, TypeError, OSError) as err:
            show_error(message("job_failed", job="opening the project", error=err))
            return None
        self._ws.set_project(project)
        self._restore(project)
        self.refresh()
        show_info(message("project_opened", path=folder, n=len(project.accepted_names())))
        return project

    def _restore(self, project) -> None:
        """Show the project's images, accepted labels and latest model in the viewer."""
        for name in project.names:
            if name not in self._viewer.layers:
                self._viewer.add_image(project.image(name), name=name)
            labels = project.corrected(name)
            masks_name = layer_names(name)["masks"]
            if labels is not None and masks_name not in self._viewer.layers:
                self._viewer.add_labels(labels, name=masks_name, metadata={"cp2_image": name})
                pred = project.prediction(name)
                if pred is not None:
                    self._ws.set_prediction(masks_name, pred)
        for _label, path in jobs.project_model_choices(project):
            self._ws.add_model(path)

    def refresh(self) -> None:
        """Update the list of accepted images and their ROI counts."""
        project = self._ws.project
        if project is None:
            self._accepted.value = "no project"
            return
        lines = []
        for name in project.accepted_names():
            acc = project.accounting(name)
            lines.append(f"{name}: {acc.n_corrected} ROIs ({acc.n_human} by you)")
        head = f"{len(lines)}/{len(project.names)} accepted · model {project.current_model}"
        self._accepted.value = "\n".join([head, *lines])

    # --------------------------------------------------------------------- next image
    def suggest_next(self) -> jobs.Task | None:
        """Rank the unaccepted images in the background (the engine's active strategy); then
        show the most uncertain one with its reason and select its layer."""
        project = self._ws.project
        if project is None:
            show_error(message("no_project"))
            return None
        return self._suggest_jobs.start(
            jobs.suggest_job(project),
            name="ranking the images",
            on_done=self._on_suggested,
        )

    def _on_suggested(self, ranking) -> None:
        self.last_ranking = list(ranking)
        if not ranking:
            self._suggestion.value = "every image is accepted"
            show_info(message("all_accepted"))
            return
        best = ranking[0]
        reason = "\n  ".join(best.reason.split("; "))
        self._suggestion.value = f"next: {best.name} (uncertainty {best.score:.2f})\n  {reason}"
        if best.name in self._viewer.layers:
            self._viewer.layers.selection.active = self._viewer.layers[best.name]
        show_info(message("suggested", name=best.name, reason=best.reason))

    # --------------------------------------------------------------------- training
    def config(self):
        """The TrainConfig of the next round (online mode, the widget's settings)."""
        from cp2_engine.training import TrainConfig

        return TrainConfig(
            mode="online",
            n_epochs=int(self._epochs.value),
            learning_rate=float(self._lr.value),
            weight_decay=float(self._wd.value),
            **self.extra_config,
        )

    def retrain(self) -> jobs.Task | None:
        """Start a retraining round in the background."""
        project = self._ws.project
        if project is None:
            show_error(message("no_project"))
            return None
        if self._jobs.busy():
            return None
        if not project.accepted_names():
            show_error(message("no_accepted"))
            return None
        try:
            config = self.config()
        except (ValueError, TypeError) as err:
            show_error(message("job_failed", job="retraining", error=err))
            return None
        return self._jobs.start(
            jobs.retrain_job(project, config),
            name="retraining",
            on_yield=self._on_event,
            on_done=self._on_trained,
        )

    def _on_event(self, event):
        """Show the training event as every job's; keep the last loss for the final message
        (the last event with a loss is the last epoch's)."""
        self._last_loss = float(getattr(event, "loss", self._last_loss))
        return event

    def _on_trained(self, record) -> None:
        self.last_record = record
        project = self._ws.project
        path = str(Path(project.folder) / record.model)
        self._progress.value = self._progress.max
        self._status.value = f"round {record.round} done: {record.model}"
        show_info(message("trained", model=record.model, loss=self._last_loss))
        self._ws.add_model(path)
        self.refresh()
        nxt = project.next_image()
        if nxt is not None and nxt in self._viewer.layers:
            self._ws.segment_requested.emit(nxt)
