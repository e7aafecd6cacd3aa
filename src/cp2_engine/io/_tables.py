"""CSV tables: per-ROI measurements of one image or of a batch (one row per ROI)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cp2_engine.util import atomic_write

__all__ = ["save_measurements_csv"]


def _cell(value) -> str:
    if isinstance(value, float | np.floating):
        return repr(float(value))
    return str(value)


def save_measurements_csv(path, measurements, *, overwrite: bool = False) -> Path:
    """Write per-ROI measurements as CSV: one image, or a batch with an ``image`` column.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.csv``.
    measurements : RoiMeasurements or mapping of str to RoiMeasurements
        One image's :func:`cp2_engine.metrics.measure_rois` result, or ``{image name: result}``
        for a batch (rows in the mapping's order; columns missing for an image stay empty).
    overwrite : bool, optional
        Replace an existing file. Default False.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.csv``.
    TypeError
        If ``measurements`` is neither of the two.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cp2_engine.metrics import measure_rois
    >>> lab = np.zeros((6, 6), np.uint16); lab[1:3, 1:3] = 1; lab[4:6, 2:6] = 2
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cells.csv"
    >>> p = save_measurements_csv(out, {"a.tif": measure_rois(lab), "b.tif": measure_rois(lab)})
    >>> lines = p.read_text().splitlines()
    >>> lines[0].split(",")[:4], len(lines), lines[3].split(",")[:2]
    (['image', 'label', 'centroid_y', 'centroid_x'], 5, ['b.tif', '1'])
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"measurement tables are .csv files, got {path.name!r}")
    if isinstance(measurements, Mapping):
        batch = dict(measurements)
    elif hasattr(measurements, "columns"):
        batch = {None: measurements}
    else:
        raise TypeError(
            "measurements must be a RoiMeasurements or a mapping {image name: RoiMeasurements}, "
            f"got {type(measurements).__name__}"
        )
    header: list[str] = []
    for table in batch.values():
        header += [c for c in table.columns if c not in header]
    with_image = None not in batch
    with (
        atomic_write(path, overwrite=overwrite) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
    ):
        writer = csv.writer(fh)
        writer.writerow((["image"] if with_image else []) + header)
        for name, table in batch.items():
            cols = [table.columns.get(c) for c in header]
            for i in range(table.n_rois):
                row = ["" if col is None else _cell(col[i]) for col in cols]
                writer.writerow(([name] if with_image else []) + row)
    return path
