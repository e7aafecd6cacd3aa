"""Run the network on an image of any size: pad, cut into overlapping tiles, batch, blend.

The scheme follows Cellpose so that outputs agree with it: the image is zero-padded to a
multiple of 16 plus 8 pixels on each side, cut into ``bsize`` tiles (``bsize`` = 224, or the
padded image if smaller) whose starts are spread evenly with at least ``tile_overlap`` overlap,
and tile outputs are blended with a separable sigmoid taper (weight 0.5 at 20 px from a tile
edge). The style of the image is the L2-normalised sum of the tile styles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from cp2_engine.network import get_runner

__all__ = [
    "TileGrid",
    "accumulate_tiles",
    "grid_tiles",
    "make_tile_grid",
    "pad_widths",
    "run_tiled",
    "taper_mask",
    "tiled_style",
]

logger = logging.getLogger(__name__)

_DIV = 16  # padded size is a multiple of this ...
_EXTRA = 8  # ... plus this many pixels on each side
_TAPER_EDGE = 20.0  # the blending weight is 0.5 this far from a tile edge
_TAPER_WIDTH = 7.5


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
    precision: str = "auto",
    backend: str = "auto",
    channels_last: bool | None = None,
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
    precision, backend : str
        How the network runs (:func:`cp2_engine.network.get_runner`): ``"auto"`` is the fast
        path this machine has; ``precision="fp32", backend="torch"`` is the exact eager path.
    channels_last : bool or None
        Torch backend: channels-last memory format (None: on the CPU; converts the net's
        weights in place, once).

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
    runner = get_runner(
        net, device=dev, precision=precision, backend=backend, channels_last=channels_last
    )
    y, style = _blend_tiles(runner, padded, grid, dev, batch_size, augment)
    norm = np.linalg.norm(style)
    style = style / norm if norm > 0 else style
    return np.ascontiguousarray(y[:, y0:y1, x0:x1]), style.astype(np.float32)


def tiled_style(
    runner,
    x,
    *,
    max_tiles: int = 8,
    bsize: int = 224,
    tile_overlap: float = 0.1,
    batch_size: int = 8,
) -> np.ndarray:
    """Style of ``x`` from at most ``max_tiles`` of its tiles, spread evenly over the image.

    The style of :func:`run_tiled` is the normalised sum over every tile; this sums the
    styles of an even subset of the same tiles (all of them when there are at most
    ``max_tiles``), so that a style costs one batch on any image size.

    Parameters
    ----------
    runner : NetRunner
        From :func:`cp2_engine.network.get_runner`.
    x : array_like
        float32 ``(nchan, H, W)`` network input.
    max_tiles, bsize, tile_overlap, batch_size : int, int, float, int
        Tile budget and the tiling of :func:`run_tiled`.

    Returns
    -------
    numpy.ndarray
        float32 ``(nstyle,)`` unit-length style.

    Examples
    --------
    >>> from cp2_engine.network import CPnet, get_runner
    >>> net = CPnet().eval()
    >>> x = np.random.default_rng(0).random((2, 96, 96), np.float32)
    >>> style = tiled_style(get_runner(net), x)
    >>> bool(np.allclose(style, run_tiled(net, x)[1], atol=1e-5))
    True
    """
    padded, _ = _prepare_input(x, augment=False, bsize=bsize)
    grid = make_tile_grid(padded.shape[1:], bsize=bsize, tile_overlap=tile_overlap)
    tiles = grid_tiles(grid)
    if len(tiles) > max_tiles:
        tiles = [tiles[int(i)] for i in np.linspace(0, len(tiles) - 1, max_tiles).round()]
    image = torch.from_numpy(padded).to(runner.device)
    ty, tx = grid.tile
    style = None
    for b0 in range(0, len(tiles), batch_size):
        chunk = tiles[b0 : b0 + batch_size]
        inp = torch.stack([image[:, ys : ys + ty, xs : xs + tx] for _, _, ys, xs in chunk])
        s = runner(inp)[1].double().sum(0)
        style = s if style is None else style + s
    style = style.cpu().numpy()
    norm = np.linalg.norm(style)
    return (style / norm if norm > 0 else style).astype(np.float32)


def _blend_tiles(runner, padded, grid, dev, batch_size, augment):
    tiles = grid_tiles(grid)
    acc, weight, style = accumulate_tiles(
        runner,
        torch.from_numpy(padded).to(dev),
        tiles,
        tile=grid.tile,
        batch_size=batch_size,
        augment=augment,
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
    runner,
    image: torch.Tensor,
    tiles,
    *,
    tile: tuple[int, int],
    origin: tuple[int, int] = (0, 0),
    batch_size: int = 8,
    augment: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``net`` on some tiles of a padded image and add up their tapered outputs.

    This is the blending of :func:`run_tiled` before the division by the weights, over a window
    of the padded image: adding the sums of several windows whose tiles partition a tile grid,
    then dividing, gives exactly the blended output of one pass over the whole image.

    Parameters
    ----------
    runner : NetRunner or CPnet
        What runs the batches (:func:`cp2_engine.network.get_runner`); a bare network (in eval
        mode) runs on its fast path (precision and backend ``"auto"``).
    image : torch.Tensor
        ``(nchan, h, w)`` window of the padded network input, on the net's device.
    tiles : sequence of (int, int, int, int)
        ``(row index, column index, ystart, xstart)`` in the whole padded image (the indices
        pick the flips when ``augment``); every tile must lie inside the window.
    tile : (int, int)
        Tile height and width.
    origin : (int, int)
        Where the window starts in the whole padded image.
    batch_size, augment
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
    net = runner if isinstance(runner, torch.nn.Module) else None  # keeps a bare net alive
    if net is not None:
        runner = get_runner(net, device=dev)
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
        out, styles = runner(inp)
        if acc is None:
            acc = torch.zeros((out.shape[1], *image.shape[1:]), device=dev)
            style = torch.zeros(styles.shape[1], device=dev, dtype=torch.float64)
        style += styles.sum(0).double()
        for k, (iy, ix, ys, xs) in enumerate(chunk):
            yk = _unflip_output(out[k], iy, ix) if augment else out[k]
            acc[:, ys : ys + ty, xs : xs + tx].addcmul_(yk, mask)
            weight[ys : ys + ty, xs : xs + tx] += mask
    return acc, weight, style
