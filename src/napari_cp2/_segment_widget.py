"""The "Model & segment" widget: pick a model, set channels/diameter/thresholds, run."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_error, show_info, show_warning

from . import _jobs as jobs
from ._layers import (
    EngineImage,
    diameter_from_shapes,
    layer_names,
    prepare_image,
    segmentation_layers,
)
from ._panel import Cp2Panel
from ._tooltips import LABELS, message
from ._tooltips import labelled as _w
from ._workspace import CachedSegmentation

__all__ = ["SegmentWidget"]

logger = logging.getLogger(__name__)

FILE_CHOICE = "file…"
_CHAN = [("gray (mean)", 0), ("1 / red", 1), ("2 / green", 2), ("3 / blue", 3)]
_CHAN += [(str(i), i) for i in range(4, 9)]
_CHAN2 = [("none", 0), *_CHAN[1:]]


class SegmentWidget(Cp2Panel):
    """Model choice and segmentation of an image layer (results: labels + hidden flow layers).

    Takes the viewer, ``workspace`` and ``threaded`` of :class:`~napari_cp2._panel.Cp2Panel`.
    """

    _progress_label = "progress"

    # ------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self._pending_recompute = False
        self._image = _w(create_widget(annotation="napari.layers.Image"), "image")
        self._model = _w(ComboBox(choices=self._model_choices), "model")
        self._model_file = _w(FileEdit(mode="r"), "model_file")
        self._chan = _w(ComboBox(choices=_CHAN, value=0), "chan")
        self._chan2 = _w(ComboBox(choices=_CHAN2, value=0), "chan2")
        self._channel_axis = _w(SpinBox(value=-1, min=-1, max=3), "channel_axis")
        self._do_3d = _w(CheckBox(value=False, text=LABELS["do_3d"]), "do_3d")
        self._anisotropy = _w(FloatSpinBox(value=1.0, min=0.05, max=100.0, step=0.1), "anisotropy")
        self._stitch = _w(FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05), "stitch_threshold")
        self._diameter = _w(FloatSpinBox(value=0.0, min=0.0, max=2000.0, step=1.0), "diameter")
        self._estimate = _w(PushButton(text=LABELS["estimate"]), "estimate")
        self._shapes = _w(
            create_widget(annotation="napari.layers.Shapes", options={"nullable": True}), "shapes"
        )
        self._from_shapes = _w(PushButton(text=LABELS["from_shapes"]), "from_shapes")
        self._flow = _w(FloatSlider(value=0.4, min=0.0, max=3.0, step=0.05), "flow_threshold")
        self._cellprob = _w(
            FloatSlider(value=0.0, min=-6.0, max=6.0, step=0.2), "cellprob_threshold"
        )
        self._augment = _w(CheckBox(value=False, text=LABELS["augment"]), "augment")
        self._precision = _w(ComboBox(choices=["auto", "fp32", "bf16"], value="auto"), "precision")
        self._run = _w(PushButton(text=LABELS["run"]), "run")
        self.extend(
            [self._image, self._model, self._model_file, self._chan, self._chan2,
             self._channel_axis, self._do_3d, self._anisotropy, self._stitch, self._diameter,
             self._estimate, self._shapes, self._from_shapes, self._flow, self._cellprob,
             self._augment, self._precision, self._run, *self.job_widgets()]
        )  # fmt: skip
        self._image.changed.connect(self._on_image_changed)
        self._run.changed.connect(lambda: self.run())
        self._estimate.changed.connect(lambda: self.estimate_diameter())
        self._from_shapes.changed.connect(lambda: self.diameter_from_shapes())
        self._flow.changed.connect(lambda _v: self.recompute())
        self._cellprob.changed.connect(lambda _v: self.recompute())
        self._on_image_changed(self._image.value)
        self._ws.model_added.connect(self._on_model_added)
        self._ws.project_changed.connect(lambda _p: self._model.reset_choices())
        self._ws.segment_requested.connect(self._on_segment_requested)

    def _model_choices(self, _widget=None) -> list[tuple[str, str]]:
        return [*jobs.all_model_choices(self._ws), (FILE_CHOICE, FILE_CHOICE)]

    # ------------------------------------------------------------------------ helpers
    def _axis_labels(self, layer) -> list[str]:
        return [str(n).lower() for n in list(self._viewer.dims.axis_labels)[-layer.ndim :]]

    def _on_image_changed(self, layer) -> None:
        if layer is None:
            return
        axis = -1
        if not layer.rgb and layer.ndim in (3, 4):
            labels = self._axis_labels(layer)
            small = [i for i, n in enumerate(layer.data.shape) if n <= 4]
            axis = labels.index("c") if "c" in labels else (small[0] if small else -1)
        self._channel_axis.value = axis
        scale = [float(s) for s in layer.scale]
        spatial = [s for i, s in enumerate(scale) if i != axis]
        if len(spatial) >= 3 and spatial[-1] > 0 and spatial[-3] != spatial[-1]:
            self._anisotropy.value = round(spatial[-3] / spatial[-1], 3)

    def _z_axis(self, layer) -> int | None:
        labels = self._axis_labels(layer)
        return labels.index("z") if "z" in labels else None

    def _stack_settings(self) -> dict:
        """Engine options of the 3-D mode: true 3-D when the stitch threshold is 0."""
        stitch = float(self._stitch.value)
        if stitch > 0:
            return {"stitch_threshold": stitch}
        return {"do_3d": True, "anisotropy": float(self._anisotropy.value)}

    def add_zoo(self, folder) -> str | None:
        """Offer the model zoo in ``folder`` as "auto (zoo: name)"; returns its key or None."""
        try:
            key = jobs.check_zoo(folder)
        except (FileNotFoundError, ValueError) as err:
            show_error(str(err))
            return None
        self._ws.add_model(key)
        return key

    def _on_model_added(self, key: str) -> None:
        self._model.reset_choices()
        self._model.value = key

    def _on_segment_requested(self, name: str) -> None:
        if name in self._viewer.layers:
            self.run(self._viewer.layers[name])

    def _model_key(self) -> str | None:
        key = self._model.value
        if key == FILE_CHOICE or key is None:
            path = self._model_file.value
            if not path or not str(path).strip() or str(path) == ".":
                return None
            return jobs.model_key_for_path(path)
        return key

    def _engine_image(self, layer):
        axis = self._channel_axis.value
        return prepare_image(
            layer.data,
            name=layer.name,
            rgb=bool(layer.rgb),
            channel_axis=None if axis < 0 else axis,
            channels=(self._chan.value, self._chan2.value),
            stack=bool(self._do_3d.value),
            z_axis=self._z_axis(layer) if self._do_3d.value else None,
        )

    def _inputs(self, layer):
        """(layer, EngineImage, model key) of a new job, or None after telling the user what is
        wrong (a job is running, no image, a bad channel, no model)."""
        if self._jobs.busy():
            return None
        layer = layer if layer is not None else self._image.value
        if layer is None:
            show_error(message("no_image"))
            return None
        try:
            eimg = self._engine_image(layer)
        except ValueError as err:
            show_error(str(err))
            return None
        key = self._model_key()
        if key is None:
            show_error(message("no_model_file"))
            return None
        return layer, eimg, key

    def _start(self, gen, *, name: str, on_done) -> jobs.Task | None:
        return self._jobs.start(gen, name=name, on_done=on_done, on_yield=self._on_progress)

    def _on_progress(self, item) -> None:
        self._jobs.show(item)

    # ------------------------------------------------------------------------ actions
    def run(self, image_layer=None) -> jobs.Task | None:
        """Segment ``image_layer`` (default: the selected one) in the background."""
        inputs = self._inputs(image_layer)
        if inputs is None:
            return None
        layer, eimg, key = inputs
        gen = jobs.segment_job(
            self._ws.models,
            key,
            eimg,
            diameter=self._diameter.value,
            flow_threshold=self._flow.value,
            cellprob_threshold=self._cellprob.value,
            augment=self._augment.value,
            precision=self._precision.value,
            **(self._stack_settings() if eimg.stack else {}),
        )
        return self._start(gen, name="segmentation", on_done=partial(self._on_segmented, layer))

    def _on_segmented(self, layer, result) -> None:
        key, seg = result
        name = self._show_layers(layer, seg)
        self._ws.cache[layer.name] = CachedSegmentation(key, seg, name)
        self._ws.set_prediction(name, np.asarray(self._viewer.layers[name].data), model=key)
        self._record_in_project(layer.name, name, key)
        self._ws.prediction_shown.emit(name, layer.name)
        self._status.value = f"{int(seg.masks.max())} ROIs"
        route = getattr(seg, "route", None)
        if route is not None:  # a zoo routed this image to one of its specialists
            self._status.value += f" · routed to {route.model_name}: {route.reason}"
        show_info(
            message("segmented", n=int(seg.masks.max()), name=layer.name, diameter=seg.diameter)
        )

    def _show_layers(self, layer, seg) -> str:
        """Add or update the output layers; never overwrite a labels layer with manual edits."""
        axis = self._channel_axis.value
        keep = [i for i in range(layer.ndim) if layer.rgb or i != axis]
        tuples = segmentation_layers(
            seg,
            image_name=layer.name,
            scale=[layer.scale[i] for i in keep],
            translate=[layer.translate[i] for i in keep],
        )
        masks_name = tuples[0][1]["name"]
        out = masks_name
        for data, meta, kind in tuples:
            name = meta["name"]
            existing = _find_layer(self._viewer, name)
            if existing is not None and not (kind == "labels" and self._has_edits(existing)):
                existing.data = data
                continue
            new = self._viewer.add_layer(_make_layer(data, meta, kind))
            if kind == "labels":
                out = new.name
        for key in ("flows", "cellprob"):
            self._viewer.layers[layer_names(layer.name)[key]].visible = False
        return out

    def _has_edits(self, labels_layer) -> bool:
        pred = self._ws.prediction_for(labels_layer.name)
        data = np.asarray(labels_layer.data)
        if pred is None:
            return bool(data.any())
        return pred.shape != data.shape or not np.array_equal(pred, data)

    def _record_in_project(self, image_name: str, labels_name: str, key: str) -> None:
        project = self._ws.project
        if project is None or image_name not in project.names:
            return
        masks = np.asarray(self._viewer.layers[labels_name].data)
        jobs.store_prediction(project, image_name, masks, model=key)

    def recompute(self) -> jobs.Task | None:
        """Recompute the masks of the selected image from cached flows with the new thresholds."""
        layer = self._image.value
        cached = self._ws.cache.get(layer.name) if layer is not None else None
        if cached is None or cached.labels_layer not in self._viewer.layers:
            return None
        if self._jobs.running:
            self._pending_recompute = True
            return None
        labels = self._viewer.layers[cached.labels_layer]
        if self._has_edits(labels):
            show_warning(message("edits_kept", name=labels.name))
            return None
        gen = jobs.recompute_job(
            self._ws.models,
            cached.model_key,
            cached.segmentation,
            flow_threshold=self._flow.value,
            cellprob_threshold=self._cellprob.value,
        )
        return self._start(gen, name="mask recompute", on_done=partial(self._on_recomputed, layer))

    def _on_recomputed(self, layer, seg) -> None:
        cached = self._ws.cache[layer.name]
        labels = self._viewer.layers[cached.labels_layer]
        labels.data = np.asarray(seg.masks)
        self._ws.cache[layer.name] = CachedSegmentation(cached.model_key, seg, labels.name)
        self._ws.set_prediction(labels.name, labels.data, model=cached.model_key)
        self._record_in_project(layer.name, labels.name, cached.model_key)
        self._status.value = f"{int(seg.masks.max())} ROIs"
        if self._pending_recompute:
            self._pending_recompute = False
            self.recompute()

    def estimate_diameter(self) -> jobs.Task | None:
        """Estimate the diameter of the selected image with the model's size model."""
        inputs = self._inputs(None)
        if inputs is None:
            return None
        _, eimg, key = inputs
        if eimg.stack:  # the size model is 2-D: estimate on the middle plane
            mid = eimg.image[eimg.image.shape[0] // 2]
            eimg = EngineImage(mid, eimg.channels, None if mid.ndim == 2 else 2)
        gen = jobs.estimate_job(self._ws.models, key, eimg)
        return self._start(gen, name="diameter estimate", on_done=self._set_diameter)

    def _set_diameter(self, value: float) -> None:
        self._diameter.value = round(float(value), 1)
        self._status.value = f"diameter {value:.1f} px"

    def diameter_from_shapes(self) -> float | None:
        """Set the diameter from the rectangles/ellipses of the chosen shapes layer."""
        shapes = self._shapes.value
        try:
            value = diameter_from_shapes(list(shapes.data) if shapes is not None else [])
        except ValueError as err:
            show_error(str(err))
            return None
        self._set_diameter(value)
        return value


def _find_layer(viewer, name: str):
    """The layer called ``name``, or None (napari's LayerList has no ``get``)."""
    return next((layer for layer in viewer.layers if layer.name == name), None)


def _make_layer(data, meta: dict, kind: str):
    from napari.layers import Layer

    return Layer.create(data, meta, kind)
