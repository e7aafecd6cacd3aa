"""The "Batch" widget: segment a folder, the open image layers or the frames of a time-lapse
layer in a worker (progress, ETA, Cancel, resume), then open the results one by one to correct.

The engine does the work (:func:`cp2_engine.batch.iter_segment_batch`): it writes what
``cp2 segment`` writes beside each image (or into the output folder), a summary table
``cp2_batch_summary.csv``, optional ROI exports and a measurement table, and on a rerun skips
the images whose outputs are complete and current for the same model and settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    Table,
    create_widget,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QSizePolicy

from . import _jobs as jobs
from ._panel import Cp2Panel
from ._segment_widget import _CHAN, _CHAN2
from ._tooltips import labelled as _w
from ._workspace import CachedSegmentation

__all__ = ["SOURCES", "BatchWidget"]

logger = logging.getLogger(__name__)

#: Where the images of a batch come from.
SOURCES = ("folder", "open image layers", "frames of a layer")
_FORMATS = ("imagej", "outlines", "geojson")


def _segmentation_from_npy(path: Path, masks: np.ndarray):
    """The engine ``Segmentation`` saved in a batch's ``_seg.npy`` (flows and cell
    probability), or None when there is none (``write seg.npy`` off, or a z-stack)."""
    from cp2_engine import io
    from cp2_engine.inference import Segmentation, SegmentConfig

    if not path.is_file() or masks.ndim != 2:
        return None
    data = io.load_seg_npy(path)
    flows = data.get("flows")
    if not isinstance(flows, list | tuple) or len(flows) < 5 or np.ndim(flows[4]) != 3:
        return None
    dp_prob = np.asarray(flows[4], np.float32)
    diameter = float(data.get("diameter") or 30.0)
    config = SegmentConfig(
        diameter=diameter,
        flow_threshold=float(data.get("flow_threshold", 0.4)),
        cellprob_threshold=float(data.get("cellprob_threshold", 0.0)),
    )
    return Segmentation(
        masks=masks, flows=dp_prob[:2], cellprob=dp_prob[2], style=np.zeros(256, np.float32),
        diameter=diameter, rescale=1.0, niter=200, config=config,
    )  # fmt: skip


def _empty_table() -> dict:
    return {c: [] for c in ("image", "status", "ROIs", "diameter", "seconds", "error")}


class BatchWidget(Cp2Panel):
    """Segment many images in the background and open the results for correction.

    Takes the viewer, ``workspace`` and ``threaded`` of :class:`~napari_cp2._panel.Cp2Panel`;
    Cancel stops the batch after the image in progress (finished images keep their outputs).
    """

    _progress_label = "images"

    def _build(self) -> None:
        #: The last batch's result (``BatchResult``) and the arrays of a layer batch by name.
        self.result = None
        self._arrays: dict[str, np.ndarray] = {}
        self._index = -1
        self._source = _w(ComboBox(choices=SOURCES, value=SOURCES[0]), "batch_source")
        self._folder = _w(FileEdit(mode="d"), "batch_folder")
        self._layer = _w(
            create_widget(annotation="napari.layers.Image", options={"nullable": True}),
            "batch_layer",
        )
        self._out = _w(FileEdit(mode="d"), "batch_out")
        self._model = _w(ComboBox(choices=lambda _w=None: jobs.all_model_choices(self._ws)),
                         "model")  # fmt: skip
        self._chan = _w(ComboBox(choices=_CHAN, value=0), "chan")
        self._chan2 = _w(ComboBox(choices=_CHAN2, value=0), "chan2")
        self._diameter = _w(FloatSpinBox(value=0.0, min=0.0, max=2000.0, step=1.0), "diameter")
        self._flow = _w(FloatSlider(value=0.4, min=0.0, max=3.0, step=0.05), "flow_threshold")
        self._cellprob = _w(
            FloatSlider(value=0.0, min=-6.0, max=6.0, step=0.2), "cellprob_threshold"
        )
        self._npy = _w(CheckBox(value=True, text="write seg.npy (Cellpose GUI)"), "batch_npy")
        self._overlay = _w(CheckBox(value=True, text="write overlay PNG"), "batch_overlay")
        self._formats = {
            f: _w(CheckBox(value=False, text=t), f"batch_{f}")
            for f, t in zip(_FORMATS, ("ImageJ ROIs (zip)", "outlines (txt)", "GeoJSON (QuPath)"))
        }
        self._measure = _w(CheckBox(value=True, text="measure ROIs (CSV)"), "batch_measure")
        self._run = _w(PushButton(text="Run batch"), "batch_run")
        self._table = Table(value=_empty_table())
        self._table.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._prev = _w(PushButton(text="◀ Previous"), "batch_prev")
        self._next = _w(PushButton(text="Next ▶"), "batch_next")
        self._shown = Label(value="")
        self.extend(
            [self._source, self._folder, self._layer, self._out, self._model, self._chan,
             self._chan2, self._diameter, self._flow, self._cellprob, self._npy, self._overlay,
             *self._formats.values(), self._measure, self._run, *self.job_widgets(), self._table,
             self._prev, self._next, self._shown]
        )  # fmt: skip
        self._run.changed.connect(lambda: self.run())
        self._prev.changed.connect(lambda: self.show_result(self._index - 1))
        self._next.changed.connect(lambda: self.show_result(self._index + 1))
        self._ws.model_added.connect(lambda _key: self._model.reset_choices())
        self._ws.project_changed.connect(lambda _p: self._model.reset_choices())

    # ------------------------------------------------------------------ inputs
    def _images(self) -> list | None:
        """The batch's images (paths or (name, array) pairs), or None after an error."""
        source = self._source.value
        if source == "folder":
            folder = self._folder.value
            if not folder or not Path(folder).is_dir() or str(folder) == ".":
                show_error("cp2: choose the folder of images to segment.")
                return None
            return [Path(folder)]
        if source == "open image layers":
            layers = [lay for lay in self._viewer.layers if lay.__class__.__name__ == "Image"]
            pairs = [(lay.name, np.asarray(lay.data)) for lay in layers]
        else:
            layer = self._layer.value
            if layer is None or np.asarray(layer.data).ndim < 3:
                show_error("cp2: choose a time-lapse image layer (T, Y, X) for its frames.")
                return None
            data = np.asarray(layer.data)
            pairs = [(f"{layer.name}_t{t:04d}", data[t]) for t in range(data.shape[0])]
        if not pairs:
            show_error("cp2: no image layers to segment.")
            return None
        return pairs

    def _out_folder(self, images) -> Path | None:
        out = self._out.value
        if out and str(out) not in ("", "."):
            return Path(out)
        if isinstance(images[0], tuple):
            raise ValueError("a batch of layers or frames needs an output folder")
        return None

    def batch_options(self) -> dict:
        """The engine options of the batch (settings, outputs)."""
        from cp2_engine.inference import SegmentConfig

        config = SegmentConfig(
            diameter=self._diameter.value or None,
            channels=(self._chan.value, self._chan2.value),
            flow_threshold=float(self._flow.value),
            cellprob_threshold=float(self._cellprob.value),
        )
        return {
            "config": config,
            "save_npy": bool(self._npy.value),
            "save_overlay": bool(self._overlay.value),
            "roi_formats": tuple(f for f, box in self._formats.items() if box.value),
            "measure": bool(self._measure.value),
        }

    # ------------------------------------------------------------------ run
    def run(self):
        """Start the batch in the background (returns the task, or None)."""
        if self._jobs.busy():
            return None
        images = self._images()
        key = self._model.value
        if images is None:
            return None
        if key is None:
            show_error("cp2: choose a model.")
            return None
        try:
            out = self._out_folder(images)
        except ValueError as err:
            show_error(f"cp2: {err}.")
            return None
        self._arrays = dict(images) if isinstance(images[0], tuple) else {}
        gen = jobs.batch_job(self._ws.models, key, images, out=out, **self.batch_options())
        return self._jobs.start(gen, name="batch", on_done=self._on_done)

    def _on_done(self, result) -> None:
        self.result = result
        self._index = -1
        rows = result.rows
        self._table.value = {
            "image": [r.image for r in rows],
            "status": [r.status for r in rows],
            "ROIs": [r.n_rois for r in rows],
            "diameter": [r.diameter for r in rows],
            "seconds": [r.seconds for r in rows],
            "error": [r.error for r in rows],
        }
        c = result.counts
        text = f"{c['segmented']} segmented · {c['skipped']} skipped · {c['failed']} failed"
        self._jobs.set_status(text)
        show_info(f"cp2: batch done: {text}; summary in {result.summary}")

    # ------------------------------------------------------------------ results
    def _done_rows(self) -> list:
        if self.result is None:
            return []
        return [r for r in self.result.rows if r.status != "failed" and r.masks]

    def show_result(self, index: int) -> str | None:
        """Open result ``index`` (of the images with masks) in the viewer, for correction.

        Adds the image and its masks (``<stem>_cp2_masks``) as the prediction the Correct panel
        follows; returns the labels layer name.
        """
        from cp2_engine import io

        rows = self._done_rows()
        if not rows:
            show_info("cp2: no batch results to open yet.")
            return None
        self._index = index % len(rows)
        row = rows[self._index]
        masks_path = Path(row.masks)
        stem = masks_path.name[: -len("_cp_masks.tif")]
        image = self._arrays.get(row.image)
        if image is None:
            image = io.imread(row.source)
        masks = io.read_labels(masks_path)
        if stem not in self._viewer.layers:
            rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
            self._viewer.add_image(image, name=stem, rgb=rgb)
        labels_name = f"{stem}_cp2_masks"
        if labels_name in self._viewer.layers:
            self._viewer.layers[labels_name].data = masks
        else:
            self._viewer.add_labels(masks, name=labels_name, metadata={"cp2_image": stem})
        self._ws.set_prediction(labels_name, masks, model=row.model)
        seg = _segmentation_from_npy(masks_path.with_name(f"{stem}_seg.npy"), masks)
        if seg is not None:  # the flows: threshold changes and one-click drawing work on it
            self._ws.cache[stem] = CachedSegmentation(row.model, seg, labels_name)
        self._ws.prediction_shown.emit(labels_name, stem)
        self._shown.value = f"result {self._index + 1}/{len(rows)}: {row.image}"
        return labels_name
