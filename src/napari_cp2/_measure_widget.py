"""The "Measure & export" widget: per-ROI measurements as the labels layer's ``features`` (so
napari's own tooltips and table see them), a CSV, and the ROIs as ImageJ zip, Cellpose outlines
or GeoJSON for QuPath. The engine measures and writes (:func:`cp2_engine.metrics.measure_rois`,
:mod:`cp2_engine.io`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, FileEdit, Label, PushButton, Table, create_widget
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QSizePolicy

from ._panel import Cp2Panel
from ._tooltips import labelled as _w

__all__ = ["EXPORTS", "MeasureWidget", "layer_scale"]

logger = logging.getLogger(__name__)

#: Export kind -> file suffix (after the image name).
EXPORTS = {
    "csv": "_measurements.csv",
    "imagej": "_rois.zip",
    "outlines": "_cp_outlines.txt",
    "geojson": ".geojson",
}


def layer_scale(layer) -> tuple[tuple[float, float] | None, str]:
    """``(scale, unit)`` of a layer's last two axes; scale None when they are plain pixels.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> layer_scale(SimpleNamespace(scale=(1.0, 1.0)))
    (None, 'px')
    >>> layer_scale(SimpleNamespace(scale=(0.5, 0.5)))
    ((0.5, 0.5), 'units')
    """
    scale = tuple(float(s) for s in layer.scale[-2:])
    units = getattr(layer, "units", None)
    unit = "units"
    if units is not None:
        text = f"{units[-1]:~}" if hasattr(units[-1], "dimensionality") else str(units[-1])
        unit = text.replace("µ", "u").replace("μ", "u").replace(" ", "") or "units"
    if unit in ("px", "pixel") or (scale == (1.0, 1.0) and unit == "units"):
        return None, "px"
    return scale, unit


def _intensity(image_layer, shape) -> tuple[np.ndarray | None, int | None]:
    """The image data for intensity columns and its channel axis (None: a single channel)."""
    if image_layer is None:
        return None, None
    data = np.asarray(image_layer.data)
    if data.shape == tuple(shape):
        return data, None
    if data.ndim == 3 and data.shape[:2] == tuple(shape):
        return data, -1
    if data.ndim == 3 and data.shape[1:] == tuple(shape):
        return data, 0
    raise ValueError(
        f"image layer '{image_layer.name}' has shape {data.shape}; the labels are {tuple(shape)}"
    )


class MeasureWidget(Cp2Panel):
    """Measure the ROIs of a labels layer and export them.

    Takes the viewer and ``workspace`` of :class:`~napari_cp2._panel.Cp2Panel`.
    """

    def _build(self) -> None:
        #: The last measurements (``RoiMeasurements``).
        self.measurements = None
        self._labels_layer = _w(create_widget(annotation="napari.layers.Labels"), "labels")
        self._image = _w(
            create_widget(annotation="napari.layers.Image", options={"nullable": True}),
            "measure_image",
        )
        self._measure = _w(PushButton(text="Measure ROIs"), "measure")
        self._table = Table(value={"label": []})
        # many columns: let the table scroll instead of squeezing the labels of the other rows
        self._table.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._folder = _w(FileEdit(mode="d"), "export_folder")
        self._overwrite = _w(CheckBox(value=False, text="replace existing files"), "overwrite")
        self._buttons = {
            kind: _w(PushButton(text=text), f"export_{kind}")
            for kind, text in (("csv", "Save measurements (CSV)"), ("imagej", "Save ImageJ ROIs"),
                               ("outlines", "Save outlines (txt)"),
                               ("geojson", "Save GeoJSON (QuPath)"))
        }  # fmt: skip
        self._status = Label(value="")
        self.extend(
            [self._labels_layer, self._image, self._measure, self._table, self._folder,
             self._overwrite, *self._buttons.values(), self._status]
        )  # fmt: skip
        self._measure.changed.connect(lambda: self.measure())
        for kind, button in self._buttons.items():
            button.changed.connect(lambda _v=None, k=kind: self.export(k))
        self._ws.prediction_shown.connect(self._on_prediction_shown)

    def _on_prediction_shown(self, labels_name: str, image_name: str) -> None:
        self.reset_choices()
        if labels_name in self._viewer.layers:
            self._labels_layer.value = self._viewer.layers[labels_name]
        if image_name in self._viewer.layers:
            self._image.value = self._viewer.layers[image_name]

    def measure(self):
        """Measure every ROI; set the layer's ``features``; return the ``RoiMeasurements``."""
        from cp2_engine.metrics import measure_rois

        layer = self._labels_layer.value
        if layer is None:
            show_error("cp2: no labels layer selected.")
            return None
        labels = np.asarray(layer.data)
        if labels.ndim != 2:
            show_error(f"cp2: measurements are 2-D; '{layer.name}' has shape {labels.shape}.")
            return None
        try:
            image, axis = _intensity(self._image.value, labels.shape)
        except ValueError as err:
            show_error(f"cp2: {err}.")
            return None
        scale, unit = layer_scale(layer)
        m = measure_rois(labels, image, channel_axis=axis, scale=scale, unit=unit)
        self.measurements = m
        layer.features = {"index": m.columns["label"], **m.columns}
        self._table.value = {k: np.round(v, 3).tolist() for k, v in m.columns.items()}
        self._status.value = f"{m.n_rois} ROIs measured ({len(m.columns)} columns)"
        return m

    def _image_name(self, layer) -> str:
        name = layer.metadata.get("cp2_image") if hasattr(layer, "metadata") else None
        return name or layer.name.removesuffix("_cp2_masks")

    def export(self, kind: str) -> Path | None:
        """Write the measurements CSV or the ROIs (``imagej``, ``outlines``, ``geojson``) of
        the labels layer into the chosen folder; return the path."""
        from cp2_engine import io

        layer, folder = self._labels_layer.value, self._folder.value
        if layer is None:
            show_error("cp2: no labels layer selected.")
            return None
        if not folder or str(folder) in ("", ".") or not Path(folder).is_dir():
            show_error("cp2: choose the folder to export into.")
            return None
        labels = np.asarray(layer.data)
        if kind == "csv" and self.measure() is None:  # measured now: the layer's current ROIs
            return None
        path = Path(folder) / f"{self._image_name(layer)}{EXPORTS[kind]}"
        over = bool(self._overwrite.value)
        writers = {
            "csv": lambda p: io.save_measurements_csv(p, self.measurements, overwrite=over),
            "imagej": lambda p: io.save_imagej_rois(p, labels, overwrite=over),
            "outlines": lambda p: io.save_outlines_txt(p, labels, overwrite=over),
            "geojson": lambda p: io.save_geojson(p, labels, overwrite=over),
        }
        try:
            out = writers[kind](path)
        except (FileExistsError, ValueError, OSError) as err:
            show_error(f"cp2: could not write {path.name}: {err}")
            return None
        self._status.value = f"saved {out.name}"
        show_info(f"cp2: saved {out}")
        return out
