"""Duplicates and output chunks of :func:`cp2_engine.large.segment_large` (steps 3 to 5).

One task per pair of neighbouring blocks finds the cells both claimed, the driver gives every
block an id offset, and one task per output chunk assembles the kept cells of its block and of
its neighbours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cp2_engine.large._blocks import _part_path
from cp2_engine.util import ProgressEvent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkWritten(ProgressEvent):
    """Progress event: output chunk ``index`` was written; ``done`` of ``total`` chunks are.

    Examples
    --------
    >>> ChunkWritten.of((0, 0), 1, 4).message
    'labels chunk (0, 0) written (1/4)'
    """

    tick: ClassVar[bool] = True

    index: tuple[int, int]

    @classmethod
    def of(cls, index, done: int, total: int) -> ChunkWritten:
        """The event with its message."""
        text = f"labels chunk {tuple(index)} written ({done}/{total})"
        return cls(tuple(index), done=done, total=total, message=text)


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


def find_duplicates(client, grid, parts_dir) -> dict:
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


def write_chunks(client, grid, counts, dropped, parts_dir, out):
    """Give every block an id offset, then write each output chunk; a generator of
    :class:`ChunkWritten` events that returns the number of cells.

    ``counts`` is {block: cells it claimed}, ``dropped`` {block: ids of its duplicates}.
    """
    from distributed import as_completed

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
    try:
        for done, fut in enumerate(as_completed(writes), start=1):
            yield ChunkWritten.of(fut.result(), done, len(writes))
    finally:
        client.cancel(writes)
    return total
