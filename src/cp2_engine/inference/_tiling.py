"""Run the network on an image of any size: pad, cut into overlapping tiles, batch, blend.

The scheme follows Cellpose so that outputs agree with it: the image is zero-padded to a
multiple of 16 plus 8 pixels on each side, cut into ``bsize`` tiles (``bsize`` = 224, or the
padded image if smaller) whose starts are spread evenly with at least ``tile_overlap`` overlap,
and tile outputs are blended with a separable sigmoid taper (weight 0.5 at 20 px from a tile
edge). The style of the image is the L2-normalised sum of the tile styles.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from cp2_engine.network import inference_forward

__all__ = [
    "TileGrid",
    "accumulate_tiles",
    "grid_tiles",
    "make_tile_grid",
    "pad_widths",
    "run_tiled",
    "taper_mask",
    "tune_allocator",
]

logger = logging.getLogger(__name__)

_DIV = 16  # padded size is a multiple of this ...
_EXTRA = 8  # ... plus this many pixels on each side
_TAPER_EDGE = 20.0  # the blending weight is 0.5 this far from a tile edge
_TAPER_WIDTH = 7.5
_ALLOCATOR_TUNED = False


@dataclass(frozen=True)
class TileGrid:
    """Tile layout over a padded image: tile size and the start of every tile.

    Attributes
    ----------
    tile : (int, int)
        Tile height and width.
    ystarts, xstarts : tuple of int
        Row and column starts; tiles are all (ystart, xstart) pairs, row-major.
    """

    tile: tuple[int, int]
    ystarts: tuple[int, ...]
    xstarts: tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.ystarts) * len(self.xstarts)


def _axis_starts(length: int, tile: int, n: int) -> tuple[int, ...]:
    return tuple(int(s) for s in np.linspace(0, length - tile, n).astype(int))


def make_tile_grid(
    shape: tuple[int, int], *, bsize: int = 224, tile_overlap: float = 0.1, augment: bool = False
) -> TileGrid:
    """Place tiles over a (padded) image of ``shape``.

    Parameters
    ----------
    shape : (int, int)
        Padded image height and width (``>= bsize`` on both axes when ``augment``).
    bsize : int
        Tile size.
    tile_overlap : float
        Wanted overlap fraction, clamped to [0.05, 0.5]. Per axis ``n = 1`` if the axis fits in
        one tile, else ``ceil((1 + 2 * overlap) * L / bsize)``.
    augment : bool
        Use 50% overlap with at least 2 tiles per axis (for flip averaging).

    Returns
    -------
    TileGrid

    Examples
    --------
    >>> grid = make_tile_grid((528, 528))
    >>> grid.tile, grid.ystarts
    ((224, 224), (0, 152, 304))
    """
    ly, lx = (int(s) for s in shape)
    if augment:
        if min(ly, lx) < bsize:
            raise ValueError(f"augment needs an image of at least {bsize} px, got {shape}")
        ny, nx = (max(2, math.ceil(2.0 * n / bsize)) for n in (ly, lx))
        return TileGrid((bsize, bsize), _axis_starts(ly, bsize, ny), _axis_starts(lx, bsize, nx))
    overlap = min(0.5, max(0.05, float(tile_overlap)))
    ty, tx = min(bsize, ly), min(bsize, lx)
    ny, nx = (1 if n <= bsize else math.ceil((1.0 + 2 * overlap) * n / bsize) for n in (ly, lx))
    return TileGrid((ty, tx), _axis_starts(ly, ty, ny), _axis_starts(lx, tx, nx))


def taper_mask(ty: int, tx: int, *, bsize: int = 224) -> np.ndarray:
    """Blending weights of a tile: a separable sigmoid that falls to 0.5 at 20 px from the edge.

    For tiles smaller than ``bsize`` the centre crop of the ``bsize`` mask is used.

    Examples
    --------
    >>> m = taper_mask(224, 224)
    >>> round(float(m[112, 112]), 3), round(float(m[112, 0]), 3)
    (1.0, 0.069)
    """
    size = max(bsize, ty, tx)
    dist = np.abs(np.arange(size) - (size - 1) / 2.0)
    w = 1.0 / (1.0 + np.exp((dist - (size / 2.0 - _TAPER_EDGE)) / _TAPER_WIDTH))
    c = size // 2
    wy = w[c - ty // 2 : c + ty // 2 + ty % 2]
    wx = w[c - tx // 2 : c + tx // 2 + tx % 2]
    return (wy[:, None] * wx[None, :]).astype(np.float32)


def _pad_amounts(length: int) -> tuple[int, int]:
    extra = _DIV * math.ceil(length / _DIV) - length
    return _EXTRA + extra // 2, _EXTRA + extra - extra // 2


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only) so large activations are not re-faulted.

    With glibc defaults, buffers above the mmap threshold are returned to the OS after every
    forward pass and page-faulted in again on the next one, which costs a large share of CPU
    inference time. This raises ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (the same effect
    as the ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` environment variables).

    It also sets ``M_ARENA_MAX`` to 1, so that threads started afterwards (the napari plugin's
    workers) allocate from the main heap: glibc gives other threads arenas whose heaps are at
    most 64 MB, where the network's larger buffers are always mapped and unmapped, whatever the
    thresholds (about 8% of a segmentation's time). A thread that has already allocated keeps
    its arena, so call this before starting the thread; dask workers get the same effect from
    ``MALLOC_ARENA_MAX=1`` (:func:`cp2_engine.large.local_cluster`).

    It is called by :func:`accumulate_tiles` on the CPU (so by :func:`run_tiled` and the
    large-image network tasks) and by the napari plugin before it starts a worker thread; set
    ``CP2_NO_ALLOCATOR_TUNING=1`` to disable.

    Returns
    -------
    bool
        True if the settings were applied (now or before).

    Examples
    --------
    >>> isinstance(tune_allocator(), bool)
    True
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("CP2_NO_ALLOCATOR_TUNING") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    ok = (
        mallopt(m_mmap_threshold, 1 << 30) == 1
        and mallopt(m_trim_threshold, (1 << 31) - 1) == 1
        and mallopt(m_arena_max, 1) == 1
    )
    _ALLOCATOR_TUNED = bool(ok)
    logger.info("glibc allocator tuning %s", "applied" if ok else "failed")
    return _ALLOCATOR_TUNED


def _flip_tile(t: torch.Tensor, iy: int, ix: int) -> torch.Tensor:
    dims = [d for d, odd in ((-2, iy % 2), (-1, ix % 2)) if odd]
    return torch.flip(t, dims) if dims else t


def _unflip_output(y: torch.Tensor, iy: int, ix: int) -> torch.Tensor:
    """Undo a tile flip on a (3, h, w) output and negate the flipped flow components."""
    y = _flip_tile(y, iy, ix)
    if iy % 2:
        y[0] = -y[0]
    if ix % 2:
        y[1] = -y[1]
    return y


def pad_widths(
    shape: tuple[int, int], *, augment: bool = False, bsize: int = 224
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Zero padding ``((top, bottom), (left, right))`` that :func:`run_tiled` adds to an image.

    Each axis is padded to a multiple of 16 plus 8 pixels on each side; with ``augment`` a
    small image is also extended at the far side to one full tile.

    Examples
    --------
    >>> pad_widths((100, 200))
    ((14, 14), (12, 12))
    """
    py, px = _pad_amounts(int(shape[0])), _pad_amounts(int(shape[1]))
    if augment:  # flips need full tiles: extend small images at the far side
        py = (py[0], py[1] + max(0, bsize - (int(shape[0]) + sum(py))))
        px = (px[0], px[1] + max(0, bsize - (int(shape[1]) + sum(px))))
    return py, px


def _prepare_input(
    x, *, augment: bool, bsize: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"run_tiled expects a (C, H, W) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("run_tiled input contains NaN or infinite values")
    py, px = pad_widths(arr.shape[1:], augment=augment, bsize=bsize)
    padded = np.pad(arr, ((0, 0), py, px))
    return padded, (py[0], py[0] + arr.shape[1], px[0], px[0] + arr.shape[2])


def run_tiled(
    net,
    x,
    *,
    bsize: int = 224,
    tile_overlap: float = 0.1,
    batch_size: int = 8,
    augment: bool = False,
    device=None,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net`` over ``x`` in blended tiles.

    Parameters
    ----------
    net : CPnet
        The network (put in eval mode by the caller; it is not modified except for an optional
        channels-last weight layout).
    x : array_like
        float32 ``(nchan, H, W)`` network input (normalised).
    bsize : int
        Tile size (multiple of 16).
    tile_overlap : float
        Overlap fraction between tiles (clamped to [0.05, 0.5]).
    batch_size : int
        Tiles per forward pass.
    augment : bool
        Test-time augmentation: 50% overlapping tiles, flipped by the parity of their row (Y)
        and column (X) index; outputs are flipped back with the flow sign corrected.
    device : torch.device or str, optional
        Where to run; default the device of the net's parameters.
    bf16 : bool
        bfloat16 autocast.
    channels_last : bool
        Use the channels-last memory format (converts the net's weights in place, once).

    Returns
    -------
    y : numpy.ndarray
        float32 ``(nout, H, W)`` blended output.
    style : numpy.ndarray
        float32 ``(nstyle,)`` unit-length style of the whole image.

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> y, style = run_tiled(CPnet().eval(), np.zeros((2, 40, 50), np.float32))
    >>> y.shape, style.shape
    ((3, 40, 50), (256,))
    """
    padded, (y0, y1, x0, x1) = _prepare_input(x, augment=augment, bsize=bsize)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    grid = make_tile_grid(
        padded.shape[1:], bsize=bsize, tile_overlap=tile_overlap, augment=augment
    )
    y, style = _blend_tiles(net, padded, grid, dev, batch_size, augment, bf16, channels_last)
    norm = np.linalg.norm(style)
    style = style / norm if norm > 0 else style
    return np.ascontiguousarray(y[:, y0:y1, x0:x1]), style.astype(np.float32)


def _blend_tiles(net, padded, grid, dev, batch_size, augment, bf16, channels_last):
    tiles = grid_tiles(grid)
    acc, weight, style = accumulate_tiles(
        net,
        torch.from_numpy(padded).to(dev),
        tiles,
        tile=grid.tile,
        batch_size=batch_size,
        augment=augment,
        bf16=bf16,
        channels_last=channels_last,
    )
    acc /= weight
    return acc.cpu().numpy(), style.cpu().numpy()


def grid_tiles(grid: TileGrid) -> list[tuple[int, int, int, int]]:
    """``(row index, column index, ystart, xstart)`` of every tile of ``grid``, row-major.

    Examples
    --------
    >>> grid_tiles(make_tile_grid((300, 224)))[:2]
    [(0, 0, 0, 0), (1, 0, 76, 0)]
    """
    return [
        (iy, ix, ys, xs)
        for iy, ys in enumerate(grid.ystarts)
        for ix, xs in enumerate(grid.xstarts)
    ]


def accumulate_tiles(
    net,
    image: torch.Tensor,
    tiles,
    *,
    tile: tuple[int, int],
    origin: tuple[int, int] = (0, 0),
    batch_size: int = 8,
    augment: bool = False,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``net`` on some tiles of a padded image and add up their tapered outputs.

    This is the blending of :func:`run_tiled` before the division by the weights, over a window
    of the padded image: adding the sums of several windows whose tiles partition a tile grid,
    then dividing, gives exactly the blended output of one pass over the whole image.

    Parameters
    ----------
    net : CPnet
        The network, in eval mode.
    image : torch.Tensor
        ``(nchan, h, w)`` window of the padded network input, on the net's device.
    tiles : sequence of (int, int, int, int)
        ``(row index, column index, ystart, xstart)`` in the whole padded image (the indices
        pick the flips when ``augment``); every tile must lie inside the window.
    tile : (int, int)
        Tile height and width.
    origin : (int, int)
        Where the window starts in the whole padded image.
    batch_size, augment, bf16, channels_last
        As in :func:`run_tiled`.

    Returns
    -------
    acc : torch.Tensor
        ``(nout, h, w)`` sum of taper x output.
    weight : torch.Tensor
        ``(h, w)`` sum of the tapers.
    style : torch.Tensor
        float64 ``(nstyle,)`` sum of the tile styles (not normalised).

    Examples
    --------
    >>> from cp2_engine.network._net import CPnet
    >>> acc, w, s = accumulate_tiles(CPnet().eval(), torch.zeros(2, 64, 64), [(0, 0, 0, 0)],
    ...                              tile=(64, 64))
    >>> acc.shape, w.shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """
    ty, tx = tile
    oy, ox = origin
    dev = image.device
    if dev.type == "cpu":
        tune_allocator()
    mask = torch.from_numpy(taper_mask(ty, tx)).to(dev)
    acc = None
    weight = torch.zeros(image.shape[1:], device=dev)
    style = None
    batch = torch.empty((min(batch_size, len(tiles)), image.shape[0], ty, tx), device=dev)
    for b0 in range(0, len(tiles), batch_size):
        chunk = [(iy, ix, ys - oy, xs - ox) for iy, ix, ys, xs in tiles[b0 : b0 + batch_size]]
        inp = batch[: len(chunk)]
        for k, (iy, ix, ys, xs) in enumerate(chunk):
            t = image[:, ys : ys + ty, xs : xs + tx]
            inp[k] = _flip_tile(t, iy, ix) if augment else t
        out, styles = inference_forward(net, inp, bf16=bf16, channels_last=channels_last)
        if acc is None:
            acc = torch.zeros((out.shape[1], *image.shape[1:]), device=dev)
            style = torch.zeros(styles.shape[1], device=dev, dtype=torch.float64)
        style += styles.sum(0).double()
        for k, (iy, ix, ys, xs) in enumerate(chunk):
            yk = _unflip_output(out[k], iy, ix) if augment else out[k]
            acc[:, ys : ys + ty, xs : xs + tx].addcmul_(yk, mask)
            weight[ys : ys + ty, xs : xs + tx] += mask
    return acc, weight, style
