"""The "Correct" widget: ROI edits on a Labels layer, per-ROI provenance, and Accept."""

from __future__ import annotations

import logging

import numpy as np
from magicgui.widgets import CheckBox, Label, PushButton, SpinBox, create_widget
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info

from . import _jobs as jobs
from ._edits import EditHistory, add_rois, delete_roi, merge_rois, relabel_roi
from ._layers import SUFFIXES
from ._panel import Cp2Panel
from ._tooltips import LABELS, message
from ._tooltips import labelled as _w

__all__ = ["PROPOSAL_LAYER", "CorrectWidget", "provenance_counts"]

logger = logging.getLogger(__name__)

#: Name of the layer that shows a click's proposed ROI until Enter or Esc.
PROPOSAL_LAYER = "cp2 click proposal"


def provenance_counts(prediction: np.ndarray | None, labels: np.ndarray):
    """Per-ROI provenance of ``labels`` against the model's ``prediction`` (engine accounting).

    Without a prediction every ROI counts as drawn by the human.

    Examples
    --------
    >>> acc = provenance_counts(np.array([[1, 0, 2]]), np.array([[1, 0, 0]]))
    >>> acc.n_accepted, acc.n_deleted
    (1, 1)
    """
    from cp2_engine.hitl import account_rois

    labels = np.asarray(labels)
    pred = np.zeros(labels.shape, np.uint16) if prediction is None else prediction
    return account_rois(pred, labels)


class CorrectWidget(Cp2Panel):
    """ROI-level corrections on a Labels layer (napari's own paint/fill/erase work too).

    Takes the viewer and ``workspace`` of :class:`~napari_cp2._panel.Cp2Panel`.
    """

    def _build(self) -> None:
        self.history = EditHistory()
        self._hooked = None
        #: The ROI a click proposed (bool mask), waiting for Enter (accept) or Esc (discard).
        self.proposal: np.ndarray | None = None
        self._labels_layer = _w(create_widget(annotation="napari.layers.Labels"), "labels")
        self._delete_mode = _w(CheckBox(value=False, text=LABELS["delete_mode"]), "delete_mode")
        self._click_mode = _w(CheckBox(value=False, text=LABELS["click_mode"]), "click_mode")
        self._shapes = _w(
            create_widget(annotation="napari.layers.Shapes", options={"nullable": True}),
            "draw_shapes",
        )
        self._add = _w(PushButton(text=LABELS["add_shapes"]), "add_shapes")
        self._merge_a = _w(SpinBox(value=1, min=1, max=2**31 - 1), "merge_a")
        self._merge_b = _w(SpinBox(value=2, min=1, max=2**31 - 1), "merge_b")
        self._merge = _w(PushButton(text=LABELS["merge"]), "merge")
        self._relabel_id = _w(SpinBox(value=1, min=1, max=2**31 - 1), "relabel_id")
        self._relabel = _w(PushButton(text=LABELS["relabel"]), "relabel")
        self._undo = _w(PushButton(text=LABELS["undo"]), "undo")
        self._accept = _w(PushButton(text=LABELS["accept"]), "accept")
        self._counts = Label(value="")
        self.extend(
            [self._labels_layer, self._delete_mode, self._click_mode, self._shapes, self._add,
             self._merge_a, self._merge_b, self._merge, self._relabel_id, self._relabel,
             self._undo, self._accept, self._counts]
        )  # fmt: skip
        self._add.changed.connect(lambda: self.add_from_shapes())
        self._merge.changed.connect(lambda: self.merge(self._merge_a.value, self._merge_b.value))
        self._relabel.changed.connect(lambda: self.relabel(self._relabel_id.value))
        self._undo.changed.connect(lambda: self.undo())
        self._accept.changed.connect(lambda: self.accept())
        self._delete_mode.changed.connect(lambda _v: self._hook_layer(self._labels_layer.value))
        self._click_mode.changed.connect(lambda _v: self._hook_layer(self._labels_layer.value))
        self._labels_layer.changed.connect(self._hook_layer)
        self._hook_layer(self._labels_layer.value)
        self._ws.prediction_shown.connect(self._on_prediction_shown)

    def _on_prediction_shown(self, labels_name: str, _image_name: str) -> None:
        """Follow the prediction the user just made: it is what they will correct."""
        if labels_name in self._viewer.layers:
            self._labels_layer.reset_choices()
            self._labels_layer.value = self._viewer.layers[labels_name]

    # ------------------------------------------------------------------ layer hooks
    def _hook_layer(self, layer) -> None:
        old = self._hooked
        if old is not None:
            if self._on_click in old.mouse_drag_callbacks:
                old.mouse_drag_callbacks.remove(self._on_click)
            old.events.paint.disconnect(self.refresh_counts)
            old.events.data.disconnect(self.refresh_counts)
        self._hooked = layer
        if layer is None:
            return
        if self._delete_mode.value or self._click_mode.value:
            layer.mouse_drag_callbacks.append(self._on_click)
        layer.bind_key("Enter", lambda _layer: self.accept_proposal(), overwrite=True)
        layer.bind_key("Escape", lambda _layer: self.discard_proposal(), overwrite=True)
        layer.events.paint.connect(self.refresh_counts)
        layer.events.data.connect(self.refresh_counts)
        self.refresh_counts()

    def _on_click(self, layer, event) -> None:
        if self._click_mode.value and not self._delete_mode.value:
            self.propose_at(event.position, world=True)
            return
        if getattr(event, "view_direction", None) is not None and len(event.dims_displayed) == 3:
            # 3-D view: the first ROI along the ray under the cursor
            value = layer.get_value(
                event.position,
                view_direction=event.view_direction,
                dims_displayed=list(event.dims_displayed),
                world=True,
            )
            if value:
                self.delete(int(value))
            return
        self.delete_at(event.position, world=True)

    # ------------------------------------------------------------------ editing core
    def _layer(self):
        layer = self._labels_layer.value
        if layer is None:
            show_error(message("no_labels"))
        return layer

    def _apply(self, layer, new: np.ndarray) -> None:
        self.history.push(layer.name, np.asarray(layer.data))
        layer.data = new
        self.refresh_counts()

    def _edit(self, func, *args):
        """Run ``func(labels, *args)`` on the chosen layer; returns the func result or None."""
        layer = self._layer()
        if layer is None:
            return None
        try:
            result = func(np.asarray(layer.data), *args)
        except ValueError as err:
            show_error(f"cp2: {err} of '{layer.name}'.")
            return None
        new = result[0] if isinstance(result, tuple) else result
        self._apply(layer, new)
        return result

    def delete_at(self, position, *, world: bool = False) -> int:
        """Delete the ROI under ``position`` (data coordinates unless ``world``); return its id."""
        layer = self._labels_layer.value
        if layer is None:
            return 0
        value = layer.get_value(position, world=world) if world else _value_at(layer, position)
        if not value:
            return 0
        return int(value) if self._edit(delete_roi, int(value)) is not None else 0

    def delete(self, label: int) -> bool:
        """Delete ROI ``label``."""
        return self._edit(delete_roi, int(label)) is not None

    def merge(self, keep: int, other: int) -> bool:
        """Merge ROI ``other`` into ROI ``keep``."""
        return self._edit(merge_rois, int(keep), int(other)) is not None

    def relabel(self, label: int) -> int:
        """Give ROI ``label`` a fresh id; return it (0 on failure)."""
        result = self._edit(relabel_roi, int(label))
        return 0 if result is None else result[1]

    def add_from_shapes(self) -> list[int]:
        """Turn every shape of the chosen shapes layer into a new ROI; return the new ids."""
        layer, shapes = self._layer(), self._shapes.value
        if layer is None:
            return []
        if shapes is None or len(shapes.data) == 0:
            show_error(message("no_shapes"))
            return []
        masks = self._shape_masks(layer, shapes)
        result = self._edit(add_rois, masks)
        if result is None:
            return []
        shapes.data = []
        return result[1]

    def _shape_masks(self, layer, shapes) -> np.ndarray:
        """Masks of the shapes, ``(N, *labels.shape)``; 2-D shapes on z-stack labels go on the
        plane the viewer shows."""
        shape = np.asarray(layer.data).shape
        if shapes.ndim >= len(shape) or len(shape) != 3:
            return shapes.to_masks(mask_shape=shape)
        flat = shapes.to_masks(mask_shape=shape[-2:])
        z = round(float(layer.world_to_data(self._viewer.dims.point)[0]))
        masks = np.zeros((len(flat), *shape), bool)
        masks[:, min(max(z, 0), shape[0] - 1)] = flat
        return masks

    def undo(self) -> bool:
        """Undo the last edit made with this widget."""
        layer = self._labels_layer.value
        previous = self.history.pop(layer.name) if layer is not None else None
        if previous is None:
            show_info(message("nothing_to_undo"))
            return False
        layer.data = previous
        self.refresh_counts()
        return True

    # ------------------------------------------------------------------ provenance / accept
    def provenance(self):
        """ROI accounting of the chosen layer against its model prediction (None: no layer)."""
        layer = self._labels_layer.value
        if layer is None:
            return None
        return provenance_counts(self._ws.prediction_for(layer.name), np.asarray(layer.data))

    def refresh_counts(self, *_args) -> None:
        """Update the provenance line (model / edited / drawn (by a click) / deleted)."""
        acc = self.provenance()
        if acc is None:
            self._counts.value = ""
            return
        layer = self._labels_layer.value
        assisted = self._assisted_in(layer) if layer is not None else []
        acc = acc.with_assisted(assisted)
        clicks = f" ({acc.n_assisted} by a click)" if acc.n_assisted else ""
        self._counts.value = (
            f"model {acc.n_accepted} · edited {acc.n_edited} · drawn {acc.n_drawn}{clicks} · "
            f"deleted {acc.n_deleted}"
        )

    # ------------------------------------------------------------------ click to draw
    def _assisted_in(self, layer) -> list[int]:
        """Labels of ``layer`` drawn by an accepted click proposal (still present)."""
        ids = self._ws.assisted.get(layer.name, set())
        data = np.asarray(layer.data)
        return sorted(i for i in ids if (data == i).any())

    def _cached_for(self, layer):
        for cached in self._ws.cache.values():
            if cached.labels_layer == layer.name:
                return cached.segmentation
        return None

    def propose_at(self, position, *, world: bool = False) -> np.ndarray | None:
        """Propose the ROI of a missed cell at ``position`` from the model's cached flows and
        cell probability; show it, and return the mask (Enter accepts, Esc discards)."""
        from cp2_engine.postprocess import propose_roi

        layer = self._layer()
        if layer is None:
            return None
        seg = self._cached_for(layer)
        if seg is None or np.asarray(seg.flows).ndim != 3:
            show_error(message("no_flows", name=layer.name))
            return None
        point = layer.world_to_data(position) if world else position
        labels = np.asarray(layer.data)
        try:
            roi = propose_roi(seg.flows, seg.cellprob, tuple(point)[-2:], labels=labels,
                              diameter=seg.diameter, niter=seg.niter,
                              cellprob_threshold=seg.config.cellprob_threshold)  # fmt: skip
        except ValueError as err:
            show_error(f"cp2: {err}.")
            return None
        if not roi.any():
            show_info(message("no_proposal"))
            return None
        self.proposal = roi
        self._show_proposal(layer, roi)
        return roi

    def _show_proposal(self, layer, roi: np.ndarray) -> None:
        name = PROPOSAL_LAYER
        if name in self._viewer.layers:
            self._viewer.layers[name].data = roi.astype(np.uint8)
        else:
            preview = Labels(roi.astype(np.uint8), name=name, opacity=0.8,
                             scale=layer.scale, translate=layer.translate)  # fmt: skip
            self._viewer.add_layer(preview)
            preview.bind_key("Enter", lambda _l: self.accept_proposal(), overwrite=True)
            preview.bind_key("Escape", lambda _l: self.discard_proposal(), overwrite=True)
        self._viewer.layers.selection.active = layer

    def accept_proposal(self) -> int:
        """Add the proposed ROI (an "assisted" drawn ROI); return its label (0: none)."""
        layer = self._labels_layer.value
        if self.proposal is None or layer is None:
            return 0
        result = self._edit(add_rois, self.proposal[None])
        self.discard_proposal()
        if result is None or not result[1]:
            return 0
        label = int(result[1][0])
        self._ws.assisted.setdefault(layer.name, set()).add(label)
        self.refresh_counts()
        return label

    def discard_proposal(self) -> None:
        """Drop the proposed ROI."""
        self.proposal = None
        if PROPOSAL_LAYER in self._viewer.layers:
            self._viewer.layers.remove(PROPOSAL_LAYER)

    def _image_name(self, layer) -> str:
        name = layer.metadata.get("cp2_image")
        if name:
            return name
        suffix = SUFFIXES["masks"]
        return layer.name[: -len(suffix)] if layer.name.endswith(suffix) else layer.name

    def accept(self):
        """Hand the labels to the open HITL project; return the project's accounting."""
        layer = self._layer()
        if layer is None:
            return None
        project = self._ws.project
        if project is None:
            show_error(message("no_project"))
            return None
        labels = np.asarray(layer.data)
        if not labels.any():
            show_error(message("empty_labels", name=layer.name, action="accept"))
            return None
        name = self._image_name(layer)
        try:
            acc = jobs.accept_labels(
                project,
                name,
                labels,
                prediction=self._ws.prediction_for(layer.name),
                model=self._ws.prediction_model(layer.name),
                assisted=self._assisted_in(layer),
            )
        except (ValueError, TypeError, OSError) as err:
            show_error(message("job_failed", job="accept", error=err))
            return None
        show_info(message("accepted", name=name, n=acc.n_corrected, human=acc.n_human))
        self._ws.image_accepted.emit(name)
        return acc


def _value_at(layer, position) -> int:
    idx = tuple(round(p) for p in position)
    data = np.asarray(layer.data)
    if any(i < 0 or i >= n for i, n in zip(idx, data.shape)):
        return 0
    return int(data[idx])
