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

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cp2_engine.inference import SegmentConfig
from cp2_engine.large._assemble import find_duplicates, write_chunks
from cp2_engine.large._blocks import (
    BlockGrid,
    _block_source,
    _block_task,
    _part_path,
    _read_region,
    _resolve_segmenter,
    open_lazy,
)
from cp2_engine.large._cluster import _connect
from cp2_engine.large._tasks import _progress, network_model, run_network_blocks
from cp2_engine.util import drain

logger = logging.getLogger(__name__)

PARTS_SUFFIX = ".cp2parts"
OWNERSHIP_MARGIN = 0.25  # x diameter: widening of a block's core when it claims cells


@dataclass(frozen=True)
class LargeResult:
    """Result of :func:`segment_large`."""

    out: str
    shape: tuple[int, int]
    n_cells: int
    n_blocks: int
    n_blocks_skipped: int
    elapsed: float


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


def _segment_block(block_src, crop, core, segmenter, kwargs, part_path, margin):
    """Worker task: segment one crop, keep the owned cells, write them to the block's part."""

    def masks():
        return _resolve_segmenter(segmenter).segment(_read_region(block_src, crop), **kwargs).masks

    return _block_task(part_path, crop, core, margin, masks)


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


def _run_dir(parts_dir, fingerprint) -> Path:
    """The folder of one run's part arrays, named by its settings.

    A block task still running when its run was cancelled writes into its own run's folder:
    after a restart with other settings that folder is gone, so the stale result can never
    be taken for a block of the new run.
    """
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()
    return Path(parts_dir) / f"run-{digest[:12]}"


def _same_run(meta: Path, fingerprint) -> bool:
    return meta.exists() and json.loads(meta.read_text()) == fingerprint


def _discard_parts(parts_dir: Path) -> None:
    """Delete an earlier run's parts while a cancelled block task of it may still write.

    The folder is first moved aside (one atomic rename), so such a task cannot make the
    deletion fail; what it writes after the move lands in its own run folder under the new
    ``parts_dir``, which is never read and goes with the new run's parts at its end.
    """
    logger.info("discarding parts of an earlier run with other settings: %s", parts_dir)
    trash = parts_dir.with_name(f"{parts_dir.name}.discarded-{os.getpid()}-{time.time_ns()}")
    os.replace(parts_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
    if trash.exists():
        logger.warning("could not delete all of %s; it can be removed by hand", trash)


def _prepare_parts(parts_dir, grid, fingerprint):
    """Create (or reuse, if they belong to the same run settings) one part array per block."""
    import zarr

    parts_dir = Path(parts_dir)
    meta = parts_dir / "run.json"
    if parts_dir.exists() and not _same_run(meta, fingerprint):
        _discard_parts(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not _same_run(meta, fingerprint):
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint))
        os.replace(tmp, meta)
    run_dir = _run_dir(parts_dir, fingerprint)
    run_dir.mkdir(exist_ok=True)
    for index in grid.indices():
        path = _part_path(run_dir, index)
        if not Path(path).exists():
            crop = grid.crop(*index)
            shape = tuple(s.stop - s.start for s in crop)
            zarr.create_array(path, shape=shape, chunks=shape, dtype="uint32", fill_value=0)


@dataclass(frozen=True)
class _Job:
    """What the stages of one run share (the driver's view; no pixels)."""

    arr: object  # the lazy dask array
    source: object
    grid: BlockGrid
    model: object
    config: SegmentConfig  # with the run's diameter and channels
    config_given: bool  # pass ``config`` to ``model.segment`` (per-block path)
    parts_dir: Path
    out: Path


def run_config(config: SegmentConfig | None, *, diameter: float, channels) -> SegmentConfig:
    """The settings of a large-image run: ``config`` with the run's diameter and channels.

    Examples
    --------
    >>> cfg = run_config(SegmentConfig(flow_threshold=0), diameter=17, channels=(2, 1))
    >>> cfg.diameter, cfg.channels, cfg.flow_threshold
    (17.0, (2, 1), 0)
    """
    if config is None:
        config = SegmentConfig()
    elif not isinstance(config, SegmentConfig):
        raise TypeError(f"config must be a SegmentConfig or None, got {type(config).__name__}")
    return dataclasses.replace(config, diameter=float(diameter), channels=tuple(channels))


def _fingerprint(source, arr, grid, model, config: SegmentConfig) -> dict:
    """The settings a resumed run must share with the run that left the parts."""
    return {
        "source": str(source) if isinstance(source, str | os.PathLike) else "array",
        "shape": list(arr.shape),
        "blocksize": grid.blocksize,
        "overlap": grid.overlap,
        "diameter": float(config.diameter),
        "model": segmenter_name(model),
        "options": {
            f.name: repr(getattr(config, f.name))
            for f in dataclasses.fields(config)
            if f.name != "device"  # where the CLI loads a model: not a result setting
        },
    }


def iter_segment_large(
    source,
    *,
    model,
    diameter: float,
    out,
    config: SegmentConfig | None = None,
    blocksize: int = 2048,
    overlap: int | None = None,
    cluster=None,
    channels=(0, 0),
    overwrite: bool = False,
    n_workers: int = 2,
    timeout: float = 10.0,
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
    settings = run_config(config, diameter=diameter, channels=channels)
    fingerprint = _fingerprint(source, arr, grid, model, settings)
    run_dir = _run_dir(parts_dir, fingerprint)
    job = _Job(arr, source, grid, model, settings, config is not None, run_dir, out)
    if not _resumable(parts_dir, fingerprint):
        _prepare_output(out, grid.shape, grid.blocksize, overwrite)
    _prepare_parts(parts_dir, grid, fingerprint)
    client, owned = _connect(cluster, n_workers, timeout)
    try:
        result = yield from _run(client, job)
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
    """A short, stable description of the segmenter, used to tell runs apart.

    Examples
    --------
    >>> segmenter_name("cp2_nuclei")
    'cp2_nuclei'
    """
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


def _segment_keywords(job: _Job) -> dict:
    """Keywords of ``segment()`` in a per-block task; ``config`` only if the caller gave one,
    so that any object with ``segment(image, *, diameter, channels)`` works."""
    kwargs = {"diameter": job.config.diameter, "channels": job.config.channels}
    return {**kwargs, "config": job.config} if job.config_given else kwargs


def _segment_each_block(client, job: _Job, segmenter, margin):
    """Per-block path (any segmenter): each block task segments its own crop."""
    futures = {}
    kwargs = _segment_keywords(job)
    for index in job.grid.indices():
        crop, core = job.grid.crop(*index), job.grid.core(*index)
        fut = client.submit(
            _segment_block,
            _block_source(client, job.source, job.arr, crop),
            crop,
            core,
            segmenter,
            kwargs,
            _part_path(job.parts_dir, index),
            margin,
            retries=2,
            pure=False,
            key=f"cp2-block-{index[0]}-{index[1]}-{time.time_ns()}",
        )
        futures[fut] = index
    return (yield from _progress(client, {}, futures))


def _segment_blocks(client, job: _Job):
    """Run the block stage: shared network tiles for a cp2 model, else one segment() per block.

    A cp2 network model with ``resample`` on (the default) takes the network path of
    :mod:`cp2_engine.large._tasks`; other segmenters, and ``resample=False``, segment
    each block's crop on its own.
    """
    seg = _shippable_segmenter(job.model, job.parts_dir)
    margin = OWNERSHIP_MARGIN * job.config.diameter
    net_model = network_model(job.model)
    if net_model is not None and job.config.resample:
        return (
            yield from run_network_blocks(
                client,
                source=job.source,
                arr=job.arr,
                grid=job.grid,
                model=net_model,
                segmenter=seg,
                config=job.config,
                parts_dir=job.parts_dir,
                margin=margin,
            )
        )
    return (yield from _segment_each_block(client, job, seg, margin))


def _run(client, job: _Job):
    counts, skipped = yield from _segment_blocks(client, job)
    dropped = find_duplicates(client, job.grid, job.parts_dir)
    total = yield from write_chunks(client, job.grid, counts, dropped, job.parts_dir, job.out)
    return total, skipped


def segment_large(
    source, *, model, diameter: float, out, config: SegmentConfig | None = None, **kwargs
) -> LargeResult:
    """Segment an image larger than memory on dask.distributed and write labels to zarr.

    Parameters
    ----------
    source : str, Path or array-like
        Input image (H, W) or (H, W, C): a zarr/OME-Zarr/TIFF path (read lazily by the workers)
        or an array.
    model : Model, str or segmenter
        A loaded :class:`~cp2_engine.inference.Model`, a model name/path (loaded once per
        worker), or any object with ``segment(image, *, diameter, channels)`` whose result has
        ``.masks`` (it is also passed ``config=`` when ``config`` is given).
    diameter : float
        Cell diameter in pixels (also sets the default context, ``2 * diameter``).
    out : str or Path
        Output zarr array of uint32 labels, chunked by ``blocksize``. Refused if it exists,
        unless ``overwrite=True``.
    config : SegmentConfig, optional
        Segmentation settings (:class:`~cp2_engine.inference.SegmentConfig`: thresholds,
        ``min_size``, ``augment``, ...); its ``diameter`` and ``channels`` are replaced by the
        ``diameter`` and ``channels`` arguments. A re-run resumes only with the same settings.
    **kwargs
        ``blocksize`` (2048), ``overlap`` (None = 2 x diameter), ``cluster`` (None = a new
        :func:`local_cluster`; or a scheduler address, a cluster object or a
        ``distributed.Client``; start your own workers with ``MALLOC_ARENA_MAX=1``), ``channels``,
        ``overwrite``, ``n_workers`` (for the LocalCluster), ``timeout`` (s, for connecting).

    Returns
    -------
    LargeResult

    Examples
    --------
    >>> from cp2_engine.inference import ClassicSegmenter
    >>> from cp2_engine.synthetic import disks
    >>> img = disks((256, 256), n_disks=12, radius=8, seed=0).image
    >>> res = segment_large(img, model=ClassicSegmenter(threshold=0.5), diameter=16,
    ...                     out=tmp / "labels.zarr", blocksize=128)  # doctest: +SKIP
    """
    gen = iter_segment_large(
        source, model=model, diameter=diameter, out=out, config=config, **kwargs
    )
    return drain(gen)
