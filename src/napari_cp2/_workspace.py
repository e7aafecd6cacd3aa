"""Per-viewer plugin state, passed explicitly to every widget.

One :class:`Cp2Workspace` exists per napari viewer. It holds the loaded models, the open
human-in-the-loop project, the cached network output per image layer (so that a threshold change
recomputes masks without rerunning the network), and the model prediction behind each labels
layer (so that the correction widget can tell model ROIs from human ones).

Closing the viewer's window cancels the workspace's running jobs (:meth:`Cp2Workspace.cancel_all`):
:func:`workspace_for` watches the window when it makes the workspace.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from psygnal import Signal

__all__ = [
    "CachedSegmentation",
    "Cp2Workspace",
    "cancel_on_close",
    "unwrap_viewer",
    "workspace_for",
]


@dataclass(frozen=True)
class CachedSegmentation:
    """The network output of one run, kept to recompute masks cheaply.

    Attributes
    ----------
    model_key : str
        Name or path of the model that produced it.
    segmentation : object
        The engine's ``Segmentation`` (masks, flows, cellprob, style, diameter).
    labels_layer : str
        Name of the labels layer that shows its masks.
    """

    model_key: str
    segmentation: Any
    labels_layer: str


class Cp2Workspace:
    """State shared by the cp2 widgets of one viewer.

    Examples
    --------
    >>> ws = Cp2Workspace()
    >>> ws.set_prediction("cells_cp2_masks", np.zeros((4, 4), np.uint16))
    >>> ws.prediction_for("cells_cp2_masks").shape
    (4, 4)
    """

    #: Emitted with the model key when a model is added (e.g. after training).
    model_added = Signal(str)
    #: Emitted with the project (or None) when a project is opened or closed.
    project_changed = Signal(object)
    #: Emitted with an image layer name when a widget asks for it to be segmented.
    segment_requested = Signal(str)
    #: Emitted with the image name after an image was accepted into the project.
    image_accepted = Signal(str)
    #: Emitted with (labels layer name, image layer name) when a model prediction is shown.
    prediction_shown = Signal(str, str)

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}
        self.extra_models: list[str] = []
        self.project: Any = None
        self.cache: dict[str, CachedSegmentation] = {}
        self._predictions: dict[str, np.ndarray] = {}
        self._prediction_models: dict[str, str | None] = {}
        self.tasks: list[Any] = []
        #: Labels layer name -> labels of the ROIs drawn with one click ("assisted").
        self.assisted: dict[str, set[int]] = {}

    def set_prediction(
        self, labels_layer: str, masks: np.ndarray, *, model: str | None = None
    ) -> None:
        """Remember the model prediction shown in ``labels_layer`` (a copy is kept).

        ``model`` names the model that made it (recorded with the prediction in a project).
        """
        self._predictions[labels_layer] = np.array(masks, copy=True)
        self._prediction_models[labels_layer] = model

    def prediction_model(self, labels_layer: str) -> str | None:
        """The model that made the prediction behind ``labels_layer`` (None: unknown)."""
        return self._prediction_models.get(labels_layer)

    def prediction_for(self, labels_layer: str) -> np.ndarray | None:
        """Return the model prediction behind ``labels_layer``, or None if it was drawn."""
        return self._predictions.get(labels_layer)

    def add_model(self, key: str) -> None:
        """Offer the model ``key`` (name or path) in the model lists, and say so."""
        if key not in self.extra_models:
            self.extra_models.append(key)
        self.model_added.emit(key)

    def set_project(self, project: Any) -> None:
        """Make ``project`` the open HITL project (None closes it)."""
        self.project = project
        self.project_changed.emit(project)

    def cancel_all(self) -> None:
        """Cancel every running background task (used when the viewer closes)."""
        for task in list(self.tasks):
            task.cancel(quiet=True)


_WORKSPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def workspace_for(viewer: Any) -> Cp2Workspace:
    """Return the workspace of ``viewer``, creating it on first use.

    Examples
    --------
    >>> class FakeViewer: ...
    >>> v = FakeViewer()
    >>> workspace_for(v) is workspace_for(v)
    True
    """
    viewer = unwrap_viewer(viewer)
    ws = _WORKSPACES.get(viewer)
    if ws is None:
        ws = Cp2Workspace()
        _WORKSPACES[viewer] = ws
        cancel_on_close(viewer, ws)
    return ws


def cancel_on_close(viewer: Any, ws: Cp2Workspace) -> bool:
    """Cancel ``ws``'s running jobs when the window of ``viewer`` closes; False: no window.

    The window's close event is watched; right after it (once napari has accepted or refused
    it, e.g. in its confirmation dialog) the jobs are cancelled if the window is gone. The
    watcher holds the workspace weakly and the window not at all.

    Examples
    --------
    >>> class FakeViewer: ...
    >>> cancel_on_close(FakeViewer(), Cp2Workspace())
    False
    """
    window = getattr(getattr(unwrap_viewer(viewer), "window", None), "_qt_window", None)
    if window is None:
        return False
    window.installEventFilter(_close_watcher(window, weakref.ref(ws)))
    return True


def _cancel_if_closed(window_ref: weakref.ref, ws_ref: weakref.ref) -> None:
    window = window_ref()
    try:
        visible = window is not None and window.isVisible()
    except RuntimeError:  # the Qt window is already deleted
        visible = False
    ws = ws_ref()
    if not visible and ws is not None:
        ws.cancel_all()


def _close_watcher(window: Any, ws_ref: weakref.ref):
    """A QObject (child of ``window``: it lives as long as the window) watching close events.

    A close by the program (``viewer.close()``) cancels at once; one by the user is checked
    right after napari's handler, which may keep the window open (its confirmation dialog).
    Nothing here holds the window, so a closed viewer can be freed.
    """
    from qtpy.QtCore import QEvent, QObject, QTimer

    class CloseWatcher(QObject):
        def eventFilter(self, obj, event) -> bool:
            if event.type() == QEvent.Type.Close:
                if event.spontaneous():
                    QTimer.singleShot(0, partial(_cancel_if_closed, weakref.ref(obj), ws_ref))
                elif (ws := ws_ref()) is not None:
                    ws.cancel_all()
            return False

    return CloseWatcher(window)


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer behind napari's ``PublicOnlyProxy``.

    napari hands each plugin widget its own proxy of the viewer; keyed on the proxy, widgets
    opened from the Plugins menu would not share one workspace.

    Examples
    --------
    >>> class FakeViewer: ...
    >>> v = FakeViewer()
    >>> unwrap_viewer(v) is v
    True
    """
    return getattr(viewer, "__wrapped__", viewer)
