"""The "Evaluate" widget: AP of a Labels layer against ground truth, curve, FP/FN layers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from magicgui.widgets import FileEdit, Label, LineEdit, PushButton, Table, create_widget
from napari.utils.notifications import show_error

from . import _jobs as jobs
from ._layers import SUFFIXES, TRUTH_SUFFIX
from ._panel import Cp2Panel
from ._tooltips import LABELS, message
from ._tooltips import labelled as _w

__all__ = ["EvaluateWidget", "parse_thresholds"]

logger = logging.getLogger(__name__)


def parse_thresholds(text: str) -> tuple[float, ...]:
    """Parse ``"0.5, 0.75"`` into IoU thresholds in (0, 1].

    Examples
    --------
    >>> parse_thresholds("0.5, 0.75 0.9")
    (0.5, 0.75, 0.9)
    """
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as err:
        raise ValueError(message("bad_thresholds")) from err
    if not values or any(not 0 < v <= 1 for v in values):
        raise ValueError(message("bad_thresholds"))
    return values


class EvaluateWidget(Cp2Panel):
    """Compare predicted labels with ground truth (a layer, or a folder of masks).

    Takes the viewer and ``workspace`` of :class:`~napari_cp2._panel.Cp2Panel`; the evaluation
    is quick and runs on the GUI thread.
    """

    def _build(self) -> None:
        self.result: dict | None = None
        self._threaded = False  # quick: the GUI thread
        self._pred = _w(create_widget(annotation="napari.layers.Labels"), "labels")
        self._truth = _w(
            create_widget(annotation="napari.layers.Labels", options={"nullable": True}), "truth"
        )
        self._folder = _w(FileEdit(mode="d"), "truth_folder")
        self._thresholds = _w(LineEdit(value="0.5, 0.75, 0.9"), "thresholds")
        self._run = _w(PushButton(text=LABELS["evaluate"]), "evaluate")
        self._table = Table(value={"IoU": [], "AP": [], "TP": [], "FP": [], "FN": []})
        self._summary = Label(value="")
        self.extend(
            [self._pred, self._truth, self._folder, self._thresholds, self._run, self._table,
             self._summary]
        )  # fmt: skip
        self._canvas = self._make_canvas()
        self._canvas.hide()  # shown once there is a curve to draw
        self._run.changed.connect(lambda: self.evaluate())
        self._ws.prediction_shown.connect(self._on_prediction_shown)
        self._viewer.layers.events.inserted.connect(lambda _e: self._suggest_truth())
        self._suggest_truth()

    def _truth_candidate(self, pred_name: str | None = None):
        """The ``*_truth`` labels layer of the prediction's image, else the only one."""
        from napari.layers import Labels

        truths = [
            layer
            for layer in self._viewer.layers
            if isinstance(layer, Labels) and layer.name.endswith(TRUTH_SUFFIX)
        ]
        image = None
        if pred_name is not None and pred_name in self._viewer.layers:
            meta = self._viewer.layers[pred_name].metadata
            image = meta.get("cp2_image") or pred_name.removesuffix(SUFFIXES["masks"])
        for layer in truths:
            if image is not None and layer.name == image + TRUTH_SUFFIX:
                return layer
        return truths[0] if len(truths) == 1 else None

    def _suggest_truth(self) -> None:
        """Fill an empty ``ground truth`` with a ``*_truth`` layer, and prefer other labels."""
        self._truth.reset_choices()
        pred = self._pred.value
        if pred is not None and pred.name.endswith(TRUTH_SUFFIX):
            self._pred.reset_choices()
            others = [c for c in self._pred.choices if not c.name.endswith(TRUTH_SUFFIX)]
            if others:
                self._pred.value = others[-1]
        if self._truth.value is None:
            candidate = self._truth_candidate(getattr(self._pred.value, "name", None))
            if candidate is not None:
                self._truth.value = candidate

    def _on_prediction_shown(self, labels_name: str, _image_name: str) -> None:
        """Evaluate the prediction the user just made, against its image's ground truth."""
        if labels_name not in self._viewer.layers:
            return
        self._pred.reset_choices()
        self._truth.reset_choices()
        self._pred.value = self._viewer.layers[labels_name]
        candidate = self._truth_candidate(labels_name)
        if candidate is not None:
            self._truth.value = candidate

    def _make_canvas(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3, 2), tight_layout=True)
        canvas = FigureCanvasQTAgg(fig)
        canvas.setMinimumHeight(160)
        self.native.layout().addWidget(canvas)
        return canvas

    def _truth_array(self, pred_layer) -> np.ndarray | None:
        layer = self._truth.value
        if layer is not None:
            return np.asarray(layer.data)
        folder = self._folder.value
        if folder is None or str(folder) in ("", "."):
            show_error(message("no_truth"))
            return None
        stem = pred_layer.metadata.get("cp2_image") or pred_layer.name
        if Path(folder).is_dir():  # cp2's one naming rule: <stem>_masks.tif, <stem>_seg.npy, ...
            from cp2_engine import io as cio

            found = cio.find_label_files(folder, kinds=("_masks", "_seg"))
            path = found.get(cio.image_base(stem))
            if path is not None:
                return np.asarray(cio.read_labels(path))
        show_error(message("truth_missing", name=stem, folder=folder))
        return None

    def evaluate(self) -> dict | None:
        """Compute the AP table, the AP-vs-IoU curve and FP/FN layers; return the numbers."""
        pred_layer = self._pred.value
        if pred_layer is None:
            show_error(message("no_labels"))
            return None
        try:
            thresholds = parse_thresholds(self._thresholds.value)
        except ValueError as err:
            show_error(str(err))
            return None
        truth = self._truth_array(pred_layer)
        if truth is None:
            return None
        pred = np.asarray(pred_layer.data)
        if truth.shape != pred.shape:
            show_error(message("shape_mismatch", a=pred_layer.name, sa=pred.shape, b="ground "
                               "truth", sb=truth.shape))  # fmt: skip
            return None
        self._jobs.start(
            jobs.evaluate_job(truth, pred, thresholds=thresholds),
            name="evaluation",
            on_done=lambda res: self._show(pred_layer, res),
        )
        return self.result

    def _show(self, pred_layer, res: dict) -> None:
        self.result = res
        self._table.value = {
            "IoU": [f"{t:.2f}" for t in res["thresholds"]],
            "AP": [f"{a:.3f}" for a in res["ap"]],
            "TP": [int(v) for v in res["tp"]],
            "FP": [int(v) for v in res["fp"]],
            "FN": [int(v) for v in res["fn"]],
        }
        self._summary.value = f"AP@0.5 (curve start) {res['curve'][1][0]:.3f}"
        self._plot(*res["curve"])
        self._set_layer(f"{pred_layer.name}_FP", res["fp_mask"], pred_layer)
        self._set_layer(f"{pred_layer.name}_FN", res["fn_mask"], pred_layer)

    def _plot(self, ious: np.ndarray, ap: np.ndarray) -> None:
        fig = self._canvas.figure
        fig.clear()
        ax = fig.add_subplot(111)
        ax.plot(ious, ap, "o-")
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("AP")
        ax.set_ylim(0, 1.02)
        self._canvas.show()
        self._canvas.draw_idle()

    def _set_layer(self, name: str, data: np.ndarray, like) -> None:
        if name in self._viewer.layers:
            self._viewer.layers[name].data = data
        else:
            self._viewer.add_labels(data, name=name, scale=like.scale, translate=like.translate)
