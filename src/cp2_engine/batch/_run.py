"""Segment many images as one progress generator: resume, summary table, measurements.

:func:`iter_segment_batch` yields a :class:`BatchProgress` after each image (done / total, ETA),
skips images whose outputs are complete and current (same model and settings: see
:mod:`cp2_engine.batch._outputs`), reports an unreadable image in the summary and goes on, and
rewrites the summary table after every image, so a cancelled batch leaves a table of what it did.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from cp2_engine import io
from cp2_engine.batch._outputs import (
    SIDECAR_SUFFIX,
    image_signature,
    is_current,
    output_paths,
    read_sidecar,
    settings_hash,
    write_outputs,
    write_sidecar,
)
from cp2_engine.util import ProgressEvent, atomic_write, format_duration

__all__ = ["SUMMARY_NAME", "BatchProgress", "BatchResult", "BatchRow", "iter_segment_batch"]

logger = logging.getLogger(__name__)

#: File name of the summary table (in the output folder, or beside the first image).
SUMMARY_NAME = "cp2_batch_summary.csv"
#: File name of the batch's measurement table (``measure=True``).
MEASUREMENTS_NAME = "cp2_batch_measurements.csv"
_COLUMNS = ("image", "status", "model", "diameter", "n_rois", "seconds", "error", "masks")


@dataclass(frozen=True)
class BatchProgress(ProgressEvent):
    """One image of a batch is finished: ``done`` of ``total`` images (segmented, skipped or
    failed); the message says which image, how it ended and the time left.

    Attributes
    ----------
    image : str
        The image just finished ("" for the first event, before any image).
    status : str
        ``segmented``, ``skipped`` (outputs current) or ``failed`` ("" before any image).
    eta : float or None
        Seconds left, from the images segmented so far (None before the first).
    """

    tick: ClassVar[bool] = True

    image: str = ""
    status: str = ""
    eta: float | None = None


@dataclass(frozen=True)
class BatchRow:
    """One line of the summary table (``source``: the image file; "" for an array)."""

    image: str
    status: str
    model: str
    diameter: float = float("nan")
    n_rois: int = 0
    seconds: float = 0.0
    error: str = ""
    masks: str = ""
    source: str = ""


@dataclass(frozen=True)
class BatchResult:
    """What a batch did: one row per image, the summary table and the measurement table."""

    rows: tuple
    summary: Path
    measurements: Path | None = None
    counts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Item:
    name: str
    stem: str
    source: object  # a path, or an array
    folder: Path


def _items(images: Iterable, out) -> list[_Item]:
    items = []
    for entry in images:
        if isinstance(entry, tuple):
            name, array = entry
            if out is None:
                raise ValueError("images given as arrays need an output folder (out=...)")
            stem = Path(str(name)).stem if Path(str(name)).suffix else str(name)
            items.append(_Item(str(name), stem, np.asarray(array), Path(out)))
            continue
        path = Path(entry)
        if path.is_dir():
            items += _items(io.find_images(path), out)
            continue
        folder = Path(out) if out is not None else path.parent
        items.append(_Item(path.name, path.stem, path, folder))
    return items


def _source(item: _Item) -> str:
    """The image file of an item ("" for an array)."""
    return "" if isinstance(item.source, np.ndarray) else str(item.source)


def _summary_path(items: list[_Item], out) -> Path:
    return Path(out) / SUMMARY_NAME if out is not None else items[0].folder / SUMMARY_NAME


def _write_summary(path: Path, rows: list[BatchRow]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, c) for c in _COLUMNS])


def _clobbers(outputs: dict, sidecar: Path) -> list[str]:
    """Existing outputs that no cp2 batch wrote (no sidecar): never overwritten silently."""
    if read_sidecar(sidecar) is not None:
        return []
    return [p.name for p in outputs.values() if p.exists()]


def _measure(masks, image, config):
    from cp2_engine.metrics import measure_rois

    if masks.ndim != 2:
        return None
    if image is None:
        return measure_rois(masks)
    axis = config.channel_axis
    chan = -1 if axis is None else axis
    spatial = image.shape if image.ndim == 2 else np.delete(image.shape, chan)
    if image.ndim not in (2, 3) or tuple(spatial) != masks.shape:
        return measure_rois(masks)  # e.g. an RGB image stored channel-first: shapes only
    return measure_rois(masks, image, channel_axis=axis)


class _Batch:
    """The state of one batch run (the generator's body, split into steps)."""

    def __init__(self, model, config, segmenter, options: dict) -> None:
        self.model, self.config, self.segmenter = str(model), config, segmenter
        self.options = options
        formats = tuple(options["roi_formats"])
        self.settings = settings_hash(self.model, config, outputs=formats)
        self.tables: dict = {}
        self.seg_seconds: list[float] = []

    def _outputs(self, item: _Item) -> dict:
        o = self.options
        return output_paths(
            item.folder,
            item.stem,
            save_npy=o["save_npy"],
            save_overlay=o["save_overlay"],
            roi_formats=o["roi_formats"],
        )

    def skip(self, item: _Item, outputs: dict, sidecar: Path, signature: str) -> BatchRow | None:
        record = is_current(sidecar, settings=self.settings, signature=signature, outputs=outputs)
        if record is None:
            return None
        if self.options["measure"]:
            image = item.source if isinstance(item.source, np.ndarray) else None
            masks = io.read_labels(outputs["masks"])
            if image is None:
                image = io.imread(item.source)
            self.tables[item.name] = _measure(masks, image, self.config)
        return BatchRow(item.name, "skipped", record.get("model", self.model),
                        record.get("diameter", float("nan")), record.get("n_rois", 0),
                        0.0, masks=str(outputs["masks"]), source=_source(item))  # fmt: skip

    def segment(self, item: _Item, outputs: dict, sidecar: Path, signature: str) -> BatchRow:
        from cp2_engine.segmenters import load_segmenter

        t0 = time.perf_counter()
        image = item.source if isinstance(item.source, np.ndarray) else io.imread(item.source)
        if self.segmenter is None:
            self.segmenter = load_segmenter(self.model, device=self.config.device)
        seg = self.segmenter.segment(image, config=self.config)
        write_outputs(image, seg, outputs, model=self.model)
        n_rois = int(len(np.unique(seg.masks)) - 1)
        seconds = time.perf_counter() - t0
        write_sidecar(sidecar, {
            "settings": self.settings, "image": signature, "model": self.model,
            "diameter": float(seg.diameter), "n_rois": n_rois,
            "outputs": sorted(p.name for p in outputs.values()),
        })  # fmt: skip
        if self.options["measure"]:
            self.tables[item.name] = _measure(seg.masks, image, self.config)
        self.seg_seconds.append(seconds)
        return BatchRow(item.name, "segmented", self.model, round(float(seg.diameter), 3),
                        n_rois, round(seconds, 3), masks=str(outputs["masks"]),
                        source=_source(item))  # fmt: skip

    def run_one(self, item: _Item) -> BatchRow:
        outputs = self._outputs(item)
        sidecar = item.folder / f"{item.stem}{SIDECAR_SUFFIX}"
        try:
            signature = image_signature(item.source)
            if self.options["resume"]:
                row = self.skip(item, outputs, sidecar, signature)
                if row is not None:
                    return row
            clobbered = [] if self.options["overwrite"] else _clobbers(outputs, sidecar)
            if clobbered:
                raise FileExistsError(
                    f"outputs exist that no cp2 batch wrote ({', '.join(clobbered)}); "
                    "choose another output folder or allow overwriting"
                )
            item.folder.mkdir(parents=True, exist_ok=True)
            return self.segment(item, outputs, sidecar, signature)
        except Exception as err:  # one bad image never stops the batch: it goes in the table
            logger.warning("batch: %s failed: %s", item.name, err)
            error = f"{type(err).__name__}: {err}"
            return BatchRow(item.name, "failed", self.model, error=error, source=_source(item))

    def eta(self, remaining: int) -> float | None:
        if not self.seg_seconds:
            return None
        return float(np.mean(self.seg_seconds)) * remaining


def iter_segment_batch(
    images,
    *,
    model,
    config=None,
    out=None,
    segmenter=None,
    save_npy: bool = True,
    save_overlay: bool = True,
    roi_formats=(),
    measure: bool = False,
    resume: bool = True,
    overwrite: bool = False,
) -> Generator[BatchProgress, None, BatchResult]:
    """Segment a batch of images, yielding a :class:`BatchProgress` after each.

    Parameters
    ----------
    images : iterable
        Image files, folders of images, or ``(name, array)`` pairs (open layers, frames).
    model : str
        Model key (name, weights file, ``zoo:<folder>``): recorded in the outputs and hashed.
    config : SegmentConfig, optional
        Settings (default ``SegmentConfig()``).
    out : str or os.PathLike, optional
        Output folder (default: beside each image; required for arrays).
    segmenter : Segmenter, optional
        The loaded ``model`` (default: loaded when the first image needs it).
    save_npy, save_overlay : bool
        Write ``_seg.npy`` and ``_cp_overlay.png`` (default both).
    roi_formats : sequence of str
        ROI exports: ``imagej``, ``outlines``, ``geojson``.
    measure : bool
        Measure every ROI and write ``cp2_batch_measurements.csv`` (one row per ROI).
    resume : bool
        Skip images whose outputs are complete and current (default True).
    overwrite : bool
        Replace outputs that no cp2 batch wrote (default False: such an image fails).

    Returns
    -------
    BatchResult
        The rows, the summary table (``cp2_batch_summary.csv``) and the measurement table.

    Examples
    --------
    >>> import tempfile
    >>> from cp2_engine.inference import Model, SegmentConfig
    >>> from cp2_engine.util import drain
    >>> imgs = [("a", np.random.default_rng(0).random((48, 48)))]
    >>> out = tempfile.mkdtemp()
    >>> kw = dict(model="random", segmenter=Model.random(seed=0), out=out,
    ...           config=SegmentConfig(diameter=30.0))
    >>> drain(iter_segment_batch(imgs, **kw)).rows[0].status
    'segmented'
    >>> drain(iter_segment_batch(imgs, **kw)).rows[0].status
    'skipped'
    """
    from cp2_engine.inference import SegmentConfig

    items = _items(images, out)
    if not items:
        raise FileNotFoundError("no images to segment")
    options = {
        "save_npy": save_npy,
        "save_overlay": save_overlay,
        "measure": measure,
        "roi_formats": tuple(roi_formats),
        "resume": resume,
        "overwrite": overwrite,
    }
    batch = _Batch(model, config or SegmentConfig(), segmenter, options)
    summary = _summary_path(items, out)
    rows: list[BatchRow] = []
    yield BatchProgress(done=0, total=len(items), message=f"0/{len(items)} images")
    for i, item in enumerate(items):
        row = batch.run_one(item)
        rows.append(row)
        _write_summary(summary, rows)
        eta = batch.eta(len(items) - i - 1)
        text = f"{i + 1}/{len(items)} images · {item.name}: {row.status}"
        text += f" · ETA {format_duration(eta)}" if eta is not None else ""
        yield BatchProgress(item.name, row.status, eta, done=i + 1, total=len(items), message=text)
    measurements = None
    tables = {k: v for k, v in batch.tables.items() if v is not None}
    if measure and tables:
        measurements = io.save_measurements_csv(
            summary.parent / MEASUREMENTS_NAME, tables, overwrite=True
        )
    counts = {s: sum(r.status == s for r in rows) for s in ("segmented", "skipped", "failed")}
    return BatchResult(tuple(rows), summary, measurements, counts)
