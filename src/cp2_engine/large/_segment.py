"""Segment images larger than memory, block by block, on dask.distributed, without seams.

How it works (see ``docs/large_images.md``):

1. The image is cut into a grid of *cores* of ``blocksize`` pixels. Each block's crop is its
   core plus ``overlap`` pixels of context on every side (``overlap >= 2 * diameter``). For a cp2
   network model the blocks share the network tiles of one whole-image pass and then run the
   dynamics on their crops (:mod:`cp2_engine.large._tasks`); any other segmenter gets
   one task per block that reads its crop straight from the zarr/TIFF file and segments it.
2. A cell belongs to the block whose core holds the cell's centroid, measured on the cell's full
   extent in the crop. Because the context is at least twice the diameter, the cell is whole in
   that crop, so every cell is judged by its real extent and cut by no border. The core is widened
   by a quarter diameter when claiming cells, so a cell whose predicted centroid moves a little
   between two blocks' crops is claimed by both rather than by neither. Each block writes only
   the cells it claims to its own part array (no two tasks write the same zarr chunk) and marks
   itself finished, so a re-run skips it.
3. One task per pair of neighbouring blocks finds the cells both claimed (overlap above half of
   the smaller cell) and drops the copy of the block that comes later in row order.
4. The driver adds up the number of kept cells per block (one integer per block) to give every
   block an id offset, so ids are globally unique and consecutive.
5. One task per output chunk (= core) assembles the kept cells of its block and of the up to 8
   neighbouring blocks that spill into it, and writes the chunk. Where two distinct cells overlap
   by a few pixels, the pixel goes to the block listed first (the chunk's own, then row order).

The driver never holds the image or the label array; workers hold one crop at a time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cp2_engine.util import drain

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".cp2parts"
OWNERSHIP_MARGIN = 0.25  # x diameter: widening of a block's core when it claims cells


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
class BlockDone:
    """Progress event: one block was segmented (or found finished by an earlier run)."""

    index: tuple[int, int]
    n_cells: int
    done: int
    total: int
    skipped: bool


@dataclass(frozen=True)
class ChunkWritten:
    """Progress event: one output chunk was written."""

    index: tuple[int, int]
    done: int
    total: int


@dataclass(frozen=True)
class LargeResult:
    """Result of :func:`segment_large`."""

    out: str
    shape: tuple[int, int]
    n_cells: int
    n_blocks: int
    n_blocks_skipped: int
    elapsed: float


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
    return _open_zarr_array(path)


def _open_zarr_array(path: Path):
    """Open a zarr array, or the first multiscale level of an (OME-)zarr group."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not zarr
        raise ValueError(f"{path} is not a readable zarr array or group: {err}") from err
    if isinstance(node, zarr.Array):
        return node
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    arrays = sorted(name for name, _ in node.arrays())
    if not arrays:
        raise ValueError(f"zarr group {path} holds no array to segment")
    return node[arrays[0]]


def _check_geometry(shape, blocksize, overlap, diameter):
    if len(shape) not in (2, 3):
        raise ValueError(f"expected a 2D image (H, W) or (H, W, C), got shape {shape}")
    if blocksize < 64:
        raise ValueError(f"blocksize must be >= 64 pixels, got {blocksize}")
    if overlap < 2 * diameter:
        raise ValueError(
            f"overlap must be >= 2 x diameter = {2 * diameter:g} pixels so that every cell is "
            f"whole in the block that owns it, got {overlap}"
        )
    if overlap > blocksize:
        raise ValueError(
            f"overlap ({overlap}) must not exceed blocksize ({blocksize}): a cell must spill into "
            "at most the neighbouring blocks; use a larger blocksize"
        )


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


def _segment_block(block_src, crop, core, segmenter, kwargs, part_path, margin):
    """Worker task: segment one crop, keep the owned cells, write them to the block's part."""
    _pin_threads_to_worker()
    done = _part_done(part_path)
    if done:
        return done
    seg = _resolve_segmenter(segmenter).segment(_read_region(block_src, crop), **kwargs)
    return _write_part(part_path, seg.masks, crop, core, margin)


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


def duplicate_cells(part_a: np.ndarray, part_b: np.ndarray, areas_a, areas_b, *, min_fraction=0.5):
    """Local ids of ``part_b``'s cells that duplicate a cell of ``part_a``.

    Two cells are the same cell predicted twice when their overlap covers more than
    ``min_fraction`` of the smaller one (neighbouring, distinct cells share at most a border).

    Parameters
    ----------
    part_a, part_b : ndarray
        Owned-cell labels of two blocks over the same region (where their crops intersect).
    areas_a, areas_b : sequence of int
        Full areas of the owned cells (index ``i`` for local id ``i + 1``).

    Returns
    -------
    ndarray of int
        Sorted local ids of ``part_b`` to drop.

    Examples
    --------
    >>> a = np.zeros((6, 6), int); a[1:4, 1:4] = 1
    >>> b = np.zeros((6, 6), int); b[1:4, 2:5] = 1
    >>> duplicate_cells(a, b, [9], [9]).tolist()
    [1]
    """
    both = (part_a > 0) & (part_b > 0)
    if not both.any():
        return np.zeros(0, np.int64)
    pairs, overlap = np.unique(
        np.stack([part_a[both], part_b[both]]).astype(np.int64), axis=1, return_counts=True
    )
    smaller = np.minimum(np.asarray(areas_a)[pairs[0] - 1], np.asarray(areas_b)[pairs[1] - 1])
    return np.unique(pairs[1][overlap > min_fraction * smaller])


def _pair_duplicates(grid, a, b, parts_dir):
    """Worker task: ids of block ``b``'s cells that duplicate block ``a``'s (a comes first)."""
    import zarr

    crop_a, crop_b = grid.crop(*a), grid.crop(*b)
    inter = [slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(crop_a, crop_b)]
    parts = [zarr.open_array(_part_path(parts_dir, i), mode="r") for i in (a, b)]
    regions = [
        p[tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(inter, crop))]
        for p, crop in zip(parts, (crop_a, crop_b))
    ]
    areas = [p.attrs["areas"] for p in parts]
    return b, duplicate_cells(regions[0], regions[1], areas[0], areas[1])


def _relabel_table(n_cells: int, dropped, offset: int) -> np.ndarray:
    """Local id -> global id (0 for dropped duplicates), consecutive from ``offset + 1``."""
    keep = np.ones(n_cells + 1, bool)
    keep[0] = False
    keep[np.asarray(dropped, np.int64)] = False
    lut = np.zeros(n_cells + 1, np.uint32)
    lut[keep] = offset + np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut


def _write_chunk(grid, index, tables, parts_dir, out_path):
    """Worker task: assemble one output chunk from the owning block and its neighbours."""
    import zarr

    core = grid.core(*index)
    chunk = np.zeros((core[0].stop - core[0].start, core[1].stop - core[1].start), np.uint32)
    for nb in grid.neighbours(*index):
        crop = grid.crop(*nb)
        inter = [
            slice(max(c.start, k.start), min(c.stop, k.stop))
            for c, k in zip(crop, core, strict=True)
        ]
        if any(s.start >= s.stop for s in inter):
            continue
        src = tuple(
            slice(s.start - c.start, s.stop - c.start) for s, c in zip(inter, crop, strict=True)
        )
        dst = tuple(
            slice(s.start - k.start, s.stop - k.start) for s, k in zip(inter, core, strict=True)
        )
        part = _relabel_table(*tables[nb])[
            zarr.open_array(_part_path(parts_dir, nb), mode="r")[src]
        ]
        region = chunk[dst]
        free = (region == 0) & (part > 0)
        region[free] = part[free]
    out = zarr.open_array(out_path, mode="r+")
    out[core] = chunk
    return index


def _part_path(parts_dir, index):
    return str(Path(parts_dir) / f"block_{index[0]}_{index[1]}")


def _prepare_output(out, shape, blocksize, overwrite):
    import zarr

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(
                f"output {out} already exists; pass overwrite=True (CLI: --overwrite) to replace"
            )
        shutil.rmtree(out)
    zarr.create_array(
        str(out), shape=shape, chunks=(blocksize, blocksize), dtype="uint32", fill_value=0
    )
    return out


def _resumable(parts_dir, fingerprint) -> bool:
    """True when an unfinished earlier run with the same settings left its parts and output."""
    meta = Path(parts_dir) / "run.json"
    out = Path(str(parts_dir)[: -len(PARTS_SUFFIX)])
    if not (meta.exists() and out.exists()):
        return False
    resumable = json.loads(meta.read_text()) == fingerprint
    if resumable:
        logger.info("resuming an unfinished run: finished blocks in %s are skipped", parts_dir)
    return resumable


def _prepare_parts(parts_dir, grid, fingerprint):
    """Create (or reuse, if they belong to the same run settings) one part array per block."""
    import zarr

    parts_dir = Path(parts_dir)
    meta = parts_dir / "run.json"
    if parts_dir.exists():
        same = meta.exists() and json.loads(meta.read_text()) == fingerprint
        if not same:
            logger.info("discarding parts of an earlier run with other settings: %s", parts_dir)
            shutil.rmtree(parts_dir)
    if not parts_dir.exists():
        parts_dir.mkdir(parents=True)

        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint))
        os.replace(tmp, meta)
    for index in grid.indices():
        path = _part_path(parts_dir, index)
        if not Path(path).exists():
            crop = grid.crop(*index)
            shape = tuple(s.stop - s.start for s in crop)
            zarr.create_array(path, shape=shape, chunks=shape, dtype="uint32", fill_value=0)


WORKER_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}
QUIET_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


def local_cluster(*, n_workers: int = 2, **kwargs):
    """Start a dask ``LocalCluster`` whose workers run cp2's block tasks at full speed.

    Workers have one thread each and start with the environment :data:`WORKER_ENVIRONMENT`:
    ``MALLOC_ARENA_MAX=1``. Dask runs tasks in worker threads, and glibc gives every thread
    other than the main one its own malloc arena, whose heaps are at most 64 MB: the network's
    larger buffers are then mapped and unmapped at every forward pass and page-faulted in
    again (about 400,000 page faults and 7-13% of the time per 24 tiles). With one arena they
    are reused, as in a single process. Workers you start yourself need the same variable
    (``MALLOC_ARENA_MAX=1 dask worker ...``); block tasks log a warning when it is missing.

    The cluster also runs with :data:`QUIET_WORKER_CONFIG`: no statistical profiler (it samples
    the busy thread's stack every 10 ms), and the event-loop tick and system monitor every 1 s
    and 5 s instead of 20 ms and 0.5 s. An idle worker then uses 0.9% of a core instead of
    4.2%, which on a machine whose cores all run blocks is taken from the blocks.

    Parameters
    ----------
    n_workers : int
        Worker processes.
    **kwargs
        Other ``distributed.LocalCluster`` options (defaults: ``threads_per_worker=1``,
        ``processes=True``, ``dashboard_address=None``).

    Returns
    -------
    distributed.LocalCluster

    Examples
    --------
    >>> with local_cluster(n_workers=1) as cluster:  # doctest: +SKIP
    ...     segment_large("slide.zarr", model="cp2_nuclei", diameter=17,
    ...                   out="labels.zarr", cluster=cluster)
    """
    import dask
    from distributed import LocalCluster

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    options = {"threads_per_worker": 1, "processes": True, "dashboard_address": None, **kwargs}
    # read by each Nanny when it is created, and set before its worker process is spawned
    environ = {**environ, **WORKER_ENVIRONMENT}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, **QUIET_WORKER_CONFIG}):
        return LocalCluster(n_workers=n_workers, **options)


def _connect(cluster, n_workers, timeout):
    """Return (client, owned) for ``cluster``: None (new LocalCluster), an address or a Client."""
    from distributed import Client

    if isinstance(cluster, Client):
        return cluster, False
    if cluster is None:
        return Client(local_cluster(n_workers=n_workers)), True
    if isinstance(cluster, str):
        try:
            return Client(cluster, timeout=timeout), True
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"could not reach the dask scheduler at {cluster!r} within {timeout} s: {err}"
            ) from err
    return Client(cluster), True


def iter_segment_large(
    source,
    *,
    model,
    diameter: float,
    out,
    blocksize: int = 2048,
    overlap: int | None = None,
    cluster=None,
    channels=(0, 0),
    overwrite: bool = False,
    n_workers: int = 2,
    timeout: float = 10.0,
    segment_kwargs: dict | None = None,
) -> Iterator:
    """Segment a large image block by block; a generator of progress events.

    Events are :class:`BlockDone` and :class:`ChunkWritten`, and for a cp2 network model also
    :class:`~cp2_engine.large.TilesDone` (one block's network tiles were run).

    Parameters are those of :func:`segment_large`; the generator returns a :class:`LargeResult`.
    Closing the generator cancels the outstanding tasks; finished blocks are kept for a re-run.
    """
    t0 = time.perf_counter()
    arr = open_lazy(source)
    overlap = math.ceil(2 * diameter) if overlap is None else int(overlap)
    _check_geometry(arr.shape, blocksize, overlap, diameter)
    grid = BlockGrid(tuple(arr.shape[:2]), int(blocksize), overlap)
    out = Path(out)
    parts_dir = out.with_name(out.name + PARTS_SUFFIX)
    kwargs = {"diameter": diameter, "channels": tuple(channels), **(segment_kwargs or {})}
    fingerprint = {
        "source": str(source) if isinstance(source, str | os.PathLike) else "array",
        "shape": list(arr.shape),
        "blocksize": grid.blocksize,
        "overlap": overlap,
        "diameter": float(diameter),
        "model": segmenter_name(model),
        "options": {k: repr(v) for k, v in sorted(kwargs.items())},
    }
    if not _resumable(parts_dir, fingerprint):
        _prepare_output(out, grid.shape, grid.blocksize, overwrite)
    _prepare_parts(parts_dir, grid, fingerprint)
    client, owned = _connect(cluster, n_workers, timeout)
    try:
        result = yield from _run(client, arr, source, grid, model, kwargs, parts_dir, out)
    finally:
        if owned:
            cluster_obj = client.cluster
            client.close()
            if cluster_obj is not None and cluster is None:
                cluster_obj.close()
    shutil.rmtree(parts_dir, ignore_errors=True)
    return LargeResult(
        str(out), grid.shape, result[0], len(grid.indices()), result[1], time.perf_counter() - t0
    )


def segmenter_name(model) -> str:
    """A short, stable description of the segmenter, used to tell runs apart."""
    if isinstance(model, str):
        return model
    return f"{type(model).__name__}:{getattr(model, 'name', '')}"


def _shippable_segmenter(model, parts_dir):
    """What to send to the workers for ``model``.

    A network model is saved once into the parts folder and sent as a path, which every worker
    loads once (sending the object would pickle 26 MB of weights into every task; scattering it
    would lose it when the workers that hold it die). Other segmenters travel with each task.
    """
    net = getattr(model, "net", None)
    if isinstance(model, str) or net is None:
        return model
    from cp2_engine.network import save_model

    path = Path(parts_dir) / "model.pth"
    save_model(net, path)
    return str(path)


def _find_duplicates(client, grid, parts_dir):
    """Run the duplicate check on every pair of neighbouring blocks; {block: dropped ids}."""
    from distributed import as_completed

    pairs = [(a, b) for a in grid.indices() for b in grid.neighbours(*a)[1:] if a < b]
    futures = [
        client.submit(_pair_duplicates, grid, a, b, str(parts_dir), retries=2, pure=False)
        for a, b in pairs
    ]
    dropped: dict = {}
    for fut in as_completed(futures):
        b, ids = fut.result()
        dropped[b] = sorted(set(dropped.get(b, [])) | {int(i) for i in ids})
    if any(dropped.values()):
        logger.info(
            "dropped %d duplicate cells seen by two blocks", sum(map(len, dropped.values()))
        )
    return dropped


def _segment_each_block(client, *, source, arr, grid, segmenter, kwargs, parts_dir, margin):
    """Per-block path (any segmenter): each block task segments its own crop."""
    from distributed import as_completed

    futures = {}
    for index in grid.indices():
        crop, core = grid.crop(*index), grid.core(*index)
        fut = client.submit(
            _segment_block,
            _block_source(client, source, arr, crop),
            crop,
            core,
            segmenter,
            kwargs,
            _part_path(parts_dir, index),
            margin,
            retries=2,
            pure=False,
            key=f"cp2-block-{index[0]}-{index[1]}-{time.time_ns()}",
        )
        futures[fut] = index
    counts, skipped, done = {}, 0, 0
    try:
        for fut in as_completed(futures):
            n, was_done = fut.result()
            counts[futures[fut]] = n
            skipped += was_done
            done += 1
            yield BlockDone(futures[fut], n, done, len(futures), was_done)
    finally:
        client.cancel(list(futures))
    return counts, skipped


def _segment_blocks(client, arr, source, grid, model, kwargs, parts_dir):
    """Run the block stage: shared network tiles for a cp2 model, else one segment() per block.

    A cp2 network model with ``resample`` on (the default) takes the network path of
    :mod:`cp2_engine.large._tasks`; other segmenters, and ``resample=False``, segment
    each block's crop on its own.
    """
    from cp2_engine.large._tasks import network_model, run_network_blocks

    seg = _shippable_segmenter(model, parts_dir)
    margin = OWNERSHIP_MARGIN * kwargs["diameter"]
    net_model = network_model(model)
    config = net_model._config(None, kwargs) if net_model is not None else None
    if config is not None and config.resample:
        return (
            yield from run_network_blocks(
                client,
                source=source,
                arr=arr,
                grid=grid,
                model=net_model,
                segmenter=seg,
                config=config,
                parts_dir=parts_dir,
                margin=margin,
            )
        )
    return (
        yield from _segment_each_block(
            client,
            source=source,
            arr=arr,
            grid=grid,
            segmenter=seg,
            kwargs=kwargs,
            parts_dir=parts_dir,
            margin=margin,
        )
    )


def _run(client, arr, source, grid, model, kwargs, parts_dir, out):
    from distributed import as_completed

    counts, skipped = yield from _segment_blocks(
        client, arr, source, grid, model, kwargs, parts_dir
    )
    dropped = _find_duplicates(client, grid, parts_dir)
    tables, total = {}, 0
    for index in grid.indices():
        tables[index] = (counts[index], dropped.get(index, []), total)
        total += counts[index] - len(dropped.get(index, []))
    writes = [
        client.submit(
            _write_chunk,
            grid,
            index,
            {nb: tables[nb] for nb in grid.neighbours(*index)},
            str(parts_dir),
            str(out),
            retries=2,
            pure=False,
        )
        for index in grid.indices()
    ]
    for done, fut in enumerate(as_completed(writes), start=1):
        yield ChunkWritten(fut.result(), done, len(writes))
    return total, skipped


def segment_large(source, *, model, diameter: float, out, **kwargs) -> LargeResult:
    """Segment an image larger than memory on dask.distributed and write labels to zarr.

    Parameters
    ----------
    source : str, Path or array-like
        Input image (H, W) or (H, W, C): a zarr/OME-Zarr/TIFF path (read lazily by the workers)
        or an array.
    model : Model, str or segmenter
        A loaded :class:`~cp2_engine.inference.Model`, a model name/path (loaded once per
        worker), or any object with ``segment(image, *, diameter, channels)`` whose result has
        ``.masks``.
    diameter : float
        Cell diameter in pixels (also sets the default context, ``2 * diameter``).
    out : str or Path
        Output zarr array of uint32 labels, chunked by ``blocksize``. Refused if it exists,
        unless ``overwrite=True``.
    **kwargs
        ``blocksize`` (2048), ``overlap`` (None = 2 x diameter), ``cluster`` (None = a new
        :func:`local_cluster`; or a scheduler address, a cluster object or a
        ``distributed.Client``; start your own workers with ``MALLOC_ARENA_MAX=1``), ``channels``,
        ``overwrite``, ``n_workers`` (for the LocalCluster), ``timeout`` (s, for connecting),
        ``segment_kwargs`` (extra keywords for ``model.segment``).

    Returns
    -------
    LargeResult

    Examples
    --------
    >>> from cp2_engine.inference._classic import ClassicSegmenter
    >>> from cp2_engine.synthetic import disks
    >>> img = disks((256, 256), n_disks=12, radius=8, seed=0).image
    >>> res = segment_large(img, model=ClassicSegmenter(threshold=0.5), diameter=16,
    ...                     out=tmp / "labels.zarr", blocksize=128)  # doctest: +SKIP
    """
    gen = iter_segment_large(source, model=model, diameter=diameter, out=out, **kwargs)
    return drain(gen)
