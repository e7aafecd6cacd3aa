"""Dask tasks of the network path of :func:`cp2_engine.large.segment_large`.

For a cp2 network model, blocks share the network tiles of one whole-image pass (see
:mod:`cp2_engine.large._network`): statistics tasks give the whole-image percentiles, one
network task per block runs the block's tiles and writes their tapered sums to a scratch
array, and one mask task per block blends the sums over its crop and runs the dynamics, once
the network tasks it reads from are done. The mask tasks write the same part arrays as the
per-block path, so duplicates, ids and output chunks are handled by the same code
(``_assemble.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cp2_engine.inference import resolve_niter
from cp2_engine.large._blocks import (
    BlockDone,
    _block_source,
    _block_task,
    _part_path,
    _pin_threads_to_worker,
    _read_region,
    _resolve_segmenter,
)
from cp2_engine.large._network import (
    NetworkLayout,
    blended_output,
    block_intensity_stats,
    intensity_range,
    network_input,
    network_sums,
)
from cp2_engine.util import ProgressEvent


@dataclass(frozen=True)
class TilesDone(ProgressEvent):
    """Progress event: block ``index`` ran its ``n_tiles`` network tiles (or an earlier run
    had, ``skipped``); ``done`` of ``total`` blocks have. Make one with :meth:`of`.

    Examples
    --------
    >>> TilesDone.of((1, 0), 6, 2, 4, True).message
    'network tiles of block (1, 0): 6 tiles (2/4 blocks, done before)'
    """

    tick: ClassVar[bool] = True

    index: tuple[int, int]
    n_tiles: int
    skipped: bool

    @classmethod
    def of(cls, index, n_tiles: int, done: int, total: int, skipped: bool) -> TilesDone:
        """The event with its message."""
        again = ", done before" if skipped else ""
        text = f"network tiles of block {tuple(index)}: {n_tiles} tiles "
        text += f"({done}/{total} blocks{again})"
        return cls(tuple(index), n_tiles, skipped, done=done, total=total, message=text)


def network_model(model):
    """The cp2 :class:`~cp2_engine.inference.Model` behind ``model`` (an object or a name/path),
    or None for other segmenters."""
    from cp2_engine.inference import Model

    if isinstance(model, Model):
        return model
    if isinstance(model, str):
        return Model.load(model, device="cpu")
    return None


def _key(kind: str, index) -> str:
    return f"cp2-{kind}-{index[0]}-{index[1]}-{time.time_ns()}"


def _stats_task(block_src, core, shape, config):
    _pin_threads_to_worker()
    raw = _read_region(block_src, core)
    return block_intensity_stats(raw, core=core, shape=shape, config=config)


def whole_image_ranges(client, *, source, arr, grid, config) -> list[tuple[float, float]]:
    """Whole-image (1st, 99th) percentiles per used channel, gathered block by block."""
    from distributed import as_completed

    futures = [
        client.submit(
            _stats_task,
            _block_source(client, source, arr, grid.core(*index)),
            grid.core(*index),
            grid.shape,
            config,
            retries=2,
            pure=False,
            key=_key("stats", index),
        )
        for index in grid.indices()
    ]
    try:
        return intensity_range((f.result() for f in as_completed(futures)), dtype=arr.dtype)
    finally:
        client.cancel(futures)


def _scratch_path(parts_dir, index) -> str:
    return str(Path(parts_dir) / f"network_{index[0]}_{index[1]}")


def _scratch_done(path) -> bool:
    import zarr

    try:
        return bool(zarr.open_array(path, mode="r").attrs.get("done"))
    except FileNotFoundError:
        return False


def _network_task(block_src, region, window, tiles, layout, config, ranges, segmenter, scratch):
    """Worker task: run one block's tiles and write their tapered sums to its scratch array."""
    import zarr

    _pin_threads_to_worker()
    if _scratch_done(scratch):
        return len(tiles), True
    model = _resolve_segmenter(segmenter)
    x = network_input(
        _read_region(block_src, region),
        region=region,
        window=window,
        layout=layout,
        config=config,
        ranges=ranges,
        nchan=model.net.nchan,
    )
    sums = network_sums(model, x, tiles=tiles, window=window, tile=layout.grid.tile, config=config)
    out = zarr.create_array(
        scratch,
        shape=sums.shape,
        chunks=(sums.shape[0], 512, 512),
        dtype="float32",
        compressors=None,
        overwrite=True,
    )
    out[...] = sums
    out.attrs["done"] = True
    return len(tiles), False


def _mask_task(index, grid, layout, config, niter, sources, parts_dir, margin, *_network_done):
    """Worker task: blend the sums over the block's crop, run the dynamics, write its part."""
    import zarr

    from cp2_engine.inference import masks_from_flows

    def read(block, win):
        own = layout.window_of(*block)
        sums = zarr.open_array(_scratch_path(parts_dir, block), mode="r")
        return sums[:, win[0] - own[0] : win[1] - own[0], win[2] - own[2] : win[3] - own[2]]

    def masks():
        y = blended_output(read, sources=sources, crop=crop, layout=layout)
        return masks_from_flows(y[:2], y[2], config=config, niter=niter)

    crop, core = grid.crop(*index), grid.core(*index)
    return _block_task(_part_path(parts_dir, index), crop, core, margin, masks)


def run_network_blocks(client, *, source, arr, grid, model, segmenter, config, parts_dir, margin):
    """Submit the network and mask tasks of every block; a generator of progress events.

    Returns ``(cells per block, number of blocks skipped)``; closing the generator cancels
    the outstanding tasks (finished blocks and scratch arrays are kept for a re-run).
    """
    rescale = model.diam_mean / config.diameter
    layout = NetworkLayout.build(
        grid.shape,
        blocksize=grid.blocksize,
        rescale=rescale,
        bsize=config.bsize,
        tile_overlap=config.tile_overlap,
        augment=config.augment,
    )
    ranges = (
        whole_image_ranges(client, source=source, arr=arr, grid=grid, config=config)
        if config.normalize
        else []
    )
    network = _submit_network_tasks(
        client, source, arr, grid, layout, (config, ranges, segmenter), parts_dir
    )
    niter = resolve_niter(config.niter, rescale=rescale, resample=config.resample)
    masks = {}
    for index in grid.indices():
        sources = layout.sources_for(layout.window_for_crop(grid.crop(*index)), grid.n_blocks)
        fut = client.submit(
            _mask_task,
            index,
            grid,
            layout,
            config,
            niter,
            sources,
            str(parts_dir),
            margin,
            *[network[s] for s in sources],
            retries=2,
            pure=False,
            key=_key("block", index),
        )
        masks[fut] = index
    return (yield from _progress(client, network, masks))


def _submit_network_tasks(client, source, arr, grid, layout, settings, parts_dir) -> dict:
    """One network task per block whose core holds tiles; {block: future}.

    ``settings`` is ``(config, ranges, segmenter)``, passed on to :func:`_network_task`.
    """
    network = {}
    for index in grid.indices():
        window = layout.window_of(*index)
        if window is None:
            continue
        region = layout.image_region_for(window)
        network[index] = client.submit(
            _network_task,
            _block_source(client, source, arr, region),
            region,
            window,
            layout.tiles_of(*index),
            layout,
            *settings,
            _scratch_path(parts_dir, index),
            retries=2,
            pure=False,
            key=_key("net", index),
        )
    return network


def _progress(client, network: dict, masks: dict):
    """Yield TilesDone/BlockDone as the tasks finish; return (cells per block, skipped)."""
    from distributed import as_completed

    by_future = {fut: index for index, fut in network.items()}
    counts, skipped, n_net, n_masks = {}, 0, 0, 0
    try:
        for fut in as_completed([*network.values(), *masks]):
            if fut in by_future:
                n_tiles, was_done = fut.result()
                n_net += 1
                yield TilesDone.of(by_future[fut], n_tiles, n_net, len(network), was_done)
                continue
            n, was_done = fut.result()
            counts[masks[fut]] = n
            skipped += was_done
            n_masks += 1
            yield BlockDone.of(masks[fut], n, n_masks, len(masks), was_done)
    finally:
        client.cancel([*network.values(), *masks])
    return counts, skipped
