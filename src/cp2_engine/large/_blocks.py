"""Blocks of a large image: the grid, reading crops, ownership of cells, part arrays, and the
per-process state of a block task (one thread, one cached model).

Both block paths use these helpers: the per-block path of :mod:`cp2_engine.large._segment` and
the network path of :mod:`cp2_engine.large._tasks`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cp2_engine.util import ProgressEvent

logger = logging.getLogger(__name__)

WORKER_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}


@dataclass(frozen=True)
class BlockGrid:
    """The grid of cores and their context crops over a 2D image.

    Examples
    --------
    >>> grid = BlockGrid(shape=(100, 250), blocksize=100, overlap=10)
    >>> grid.n_blocks
    (1, 3)
    >>> grid.core(0, 1)
    (slice(0, 100, None), slice(100, 200, None))
    >>> grid.crop(0, 1)
    (slice(0, 100, None), slice(90, 210, None))
    """

    shape: tuple[int, int]
    blocksize: int
    overlap: int

    @property
    def n_blocks(self) -> tuple[int, int]:
        return tuple(math.ceil(s / self.blocksize) for s in self.shape)

    def indices(self) -> list[tuple[int, int]]:
        ny, nx = self.n_blocks
        return [(i, j) for i in range(ny) for j in range(nx)]

    def core(self, i: int, j: int) -> tuple[slice, slice]:
        b = self.blocksize
        return tuple(
            slice(k * b, min((k + 1) * b, s)) for k, s in zip((i, j), self.shape, strict=True)
        )

    def crop(self, i: int, j: int) -> tuple[slice, slice]:
        return tuple(
            slice(max(c.start - self.overlap, 0), min(c.stop + self.overlap, s))
            for c, s in zip(self.core(i, j), self.shape, strict=True)
        )

    def neighbours(self, i: int, j: int) -> list[tuple[int, int]]:
        """The block itself first, then the blocks around it, in a fixed order."""
        ny, nx = self.n_blocks
        around = [
            (i + di, j + dj)
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            if (di, dj) != (0, 0) and 0 <= i + di < ny and 0 <= j + dj < nx
        ]
        return [(i, j), *around]


@dataclass(frozen=True)
class BlockDone(ProgressEvent):
    """Progress event: block ``index`` was segmented (or found finished by an earlier run,
    ``skipped``); ``done`` of ``total`` blocks are. Make one with :meth:`of`.

    Examples
    --------
    >>> BlockDone.of((0, 1), 12, 3, 4, False).message
    'block (0, 1): 12 cells (3/4 blocks)'
    """

    tick: ClassVar[bool] = True

    index: tuple[int, int]
    n_cells: int
    skipped: bool

    @classmethod
    def of(cls, index, n_cells: int, done: int, total: int, skipped: bool) -> BlockDone:
        """The event with its message."""
        again = ", done before" if skipped else ""
        text = f"block {tuple(index)}: {n_cells} cells ({done}/{total} blocks{again})"
        return cls(tuple(index), n_cells, skipped, done=done, total=total, message=text)


def open_lazy(source):
    """Open ``source`` as a lazy dask array.

    Parameters
    ----------
    source : str, Path or array-like
        A zarr array or group path (OME-Zarr: the first multiscale level), a TIFF path (read
        through tifffile's zarr store), or an array-like (numpy, zarr, dask).

    Returns
    -------
    dask.array.Array

    Examples
    --------
    >>> open_lazy(np.zeros((4, 6))).shape
    (4, 6)
    """
    import dask.array as da

    if not isinstance(source, str | os.PathLike):
        return source if isinstance(source, da.Array) else da.from_array(source)
    return da.from_zarr(open_zarr_source(source))


def open_zarr_source(path):
    """Open a zarr/OME-Zarr/TIFF path as a zarr array, which reads only what is indexed.

    Block tasks read their crop through this, not through dask: a dask ``compute()`` inside a
    worker task goes back to the scheduler as new tasks, so the task lets another block start
    on the same 1-thread worker while it waits (two crops in memory at once, unbalanced workers).

    Examples
    --------
    >>> import zarr
    >>> z = zarr.create_array(tmp / "a.zarr", shape=(4, 6), dtype="uint8")  # doctest: +SKIP
    >>> open_zarr_source(tmp / "a.zarr")[1:3, :2].shape  # doctest: +SKIP
    (2, 2)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input image not found: {path} (expected a .zarr or .tif path)")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        import zarr

        return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    from cp2_engine.io import open_zarr_array

    return open_zarr_array(path)


def owned_cells(
    masks: np.ndarray, crop: tuple[slice, slice], core: tuple[slice, slice], *, margin: float = 0
):
    """Keep the cells of a crop whose centroid lies in the core, renumbered 1..n.

    With ``margin > 0`` the core is widened by ``margin`` pixels on every side, so a cell whose
    centroid moved a little between two blocks' predictions is kept by both (and the duplicate
    is resolved later, see :func:`duplicate_cells`) rather than by neither.

    Parameters
    ----------
    masks : ndarray
        Labels of the crop.
    crop, core : tuple of slice
        Where the crop and the core lie in the whole image.
    margin : float
        Widening of the core, in pixels.

    Returns
    -------
    owned : ndarray of uint32
        Labels of the crop holding only the owned cells, consecutive from 1.
    n : int
        Number of owned cells.

    Examples
    --------
    >>> m = np.zeros((10, 10), int); m[1:3, 1:3] = 1; m[6:9, 6:9] = 2
    >>> owned, n = owned_cells(m, (slice(0, 10), slice(0, 10)), (slice(0, 5), slice(0, 5)))
    >>> n, int(owned.max())
    (1, 1)
    """
    masks = np.asarray(masks)
    nlab = int(masks.max()) if masks.size else 0
    if nlab == 0:
        return np.zeros(masks.shape, np.uint32), 0
    flat = masks.ravel()
    counts = np.bincount(flat, minlength=nlab + 1).astype(np.float64)
    yy, xx = np.divmod(np.arange(flat.size), masks.shape[1])
    cy = np.bincount(flat, weights=yy, minlength=nlab + 1) / np.maximum(counts, 1) + crop[0].start
    cx = np.bincount(flat, weights=xx, minlength=nlab + 1) / np.maximum(counts, 1) + crop[1].start
    keep = (
        (counts > 0)
        & (cy >= core[0].start - margin)
        & (cy < core[0].stop + margin)
        & (cx >= core[1].start - margin)
        & (cx < core[1].stop + margin)
    )
    keep[0] = False
    lut = np.zeros(nlab + 1, np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut[masks], int(keep.sum())


def _block_source(client, source, arr, crop):
    """What a block task reads its crop from: a path or zarr array (read by the worker), or a
    future of the crop of an in-memory or dask array (never the whole image)."""
    if isinstance(source, str | os.PathLike) or hasattr(source, "oindex"):
        return source
    if isinstance(source, np.ndarray):
        return np.ascontiguousarray(source[crop])
    return client.compute(arr[crop])


def _read_region(block_src, region) -> np.ndarray:
    """Pixels of ``region`` from what :func:`_block_source` gave the task."""
    if isinstance(block_src, str | os.PathLike):
        return np.asarray(open_zarr_source(block_src)[region])
    if hasattr(block_src, "oindex"):  # a zarr array: read just the region
        return np.asarray(block_src[region])
    return np.asarray(block_src)  # the region itself


def _part_done(part_path):
    """(n_cells, True) if the block's part was finished by this or an earlier run, else None."""
    import zarr

    part = zarr.open_array(part_path, mode="r")
    return (int(part.attrs["n_cells"]), True) if part.attrs.get("done") else None


def _write_part(part_path, masks, crop, core, margin) -> tuple[int, bool]:
    """Keep the cells of ``masks`` that the block owns, write them to its part, mark it done."""
    import zarr

    owned, n = owned_cells(masks, crop, core, margin=margin)
    part = zarr.open_array(part_path, mode="r+")
    part[...] = owned
    areas = np.bincount(owned.ravel(), minlength=n + 1)[1:]
    part.attrs.update({"n_cells": n, "areas": areas.tolist(), "done": True})
    return n, False


def _block_task(part_path, crop, core, margin, masks_of) -> tuple[int, bool]:
    """The body of every block task: ``(n_cells, True)`` when the block's part is finished
    (by this or an earlier run), else write the cells of ``masks_of()`` that the block owns."""
    _pin_threads_to_worker()
    done = _part_done(part_path)
    if done:
        return done
    return _write_part(part_path, masks_of(), crop, core, margin)


def _pin_threads_to_worker() -> None:
    """Run torch and numba with one thread in each block task of a dask worker.

    A dask worker runs as many tasks at once as it has threads, and torch's thread count is
    shared by the whole process, so one thread per task is what keeps the worker at its
    thread count: n one-thread workers run n threads, and one n-thread worker runs n blocks
    with one thread each. Without this, each block used torch's and numba's default of one
    thread per core, oversubscribing the cores n-fold.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return  # not inside a dask worker
    import numba
    import torch

    numba.set_num_threads(1)
    torch.set_num_threads(1)  # after numba: starting numba's OpenMP layer can reset torch's
    _warn_about_malloc_arenas()


_ARENA_WARNING_GIVEN = False


def _warn_about_malloc_arenas() -> None:
    """Warn once per worker process started without ``MALLOC_ARENA_MAX=1`` (glibc only)."""
    global _ARENA_WARNING_GIVEN
    if _ARENA_WARNING_GIVEN or not sys.platform.startswith("linux"):
        return
    _ARENA_WARNING_GIVEN = True
    if os.environ.get("MALLOC_ARENA_MAX") != WORKER_ENVIRONMENT["MALLOC_ARENA_MAX"]:
        logger.warning(
            "this dask worker was started without MALLOC_ARENA_MAX=1: the network runs about "
            "10%% slower in its task threads (buffers are re-mapped at every pass); start "
            "workers with MALLOC_ARENA_MAX=1, as cp2_engine.large.local_cluster() does"
        )


_SEGMENTER_CACHE: dict = {}


def _resolve_segmenter(segmenter):
    """A model name/path is loaded once per worker process; objects are used as they are."""
    if not isinstance(segmenter, str):
        return segmenter
    key = (segmenter, os.stat(segmenter).st_mtime_ns if os.path.exists(segmenter) else 0)
    if key not in _SEGMENTER_CACHE:
        from cp2_engine.inference import Model

        _SEGMENTER_CACHE[key] = Model.load(segmenter, device="auto")
    return _SEGMENTER_CACHE[key]


def _part_path(parts_dir, index):
    return str(Path(parts_dir) / f"block_{index[0]}_{index[1]}")
