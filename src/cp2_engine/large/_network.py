"""The network stage of large-image segmentation: each tile of one whole-image pass runs once.

If every block tiled its own crop, the blocks would run more 224-px network tiles than one pass
over the whole image (at blocksize 2048: 12 x 12 tiles per block against 11 x 11, so 2304
against 1936 tiles on an 8192^2 image), and near their borders they would blend different
tiles than that pass. Here the tiles are the ones a single pass lays over the whole rescaled,
padded image:

1. The intensity normalisation uses the percentiles of the whole image, gathered block by block
   (see :func:`block_intensity_stats`): exact for 8- and 16-bit integer channels, from a regular
   subsample of at most about 4 million pixels otherwise.
2. Each tile belongs to the block whose core holds the tile's centre (:class:`NetworkLayout`).
   A block's network task builds the network input under its tiles from its own crop of the
   image and writes the tapered sums (taper x output, and the taper) to a scratch array
   (:func:`network_sums`).
3. A block's mask task adds up the sums of the blocks whose windows meet its crop. That is the
   blended output of one pass over the whole image, up to float rounding. It resizes it back to
   the image scale (:func:`blended_output`) and runs the flow dynamics on the crop.

Resizing follows :func:`cp2_engine.inference.resize_image` (bilinear, pixel-centre aligned)
on the whole image's grid, so a window resized here holds the same values as the same window of
the whole resized image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from cp2_engine.inference import (
    MIN_RANGE,
    TileGrid,
    convert_image,
    fit_channels,
    make_tile_grid,
    pad_widths,
)

__all__ = [
    "NetworkLayout",
    "blended_output",
    "block_intensity_stats",
    "intensity_range",
    "network_input",
    "network_sums",
]

_SAMPLE_PIXELS = 4_000_000  # subsample size for the percentiles of non-integer channels
_LOWER, _UPPER = 1.0, 99.0  # normalisation percentiles (as in normalize99)

Window = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive


def _linear_taps(n_in: int, n_out: int, start: int, stop: int):
    """Source indices and weight of bilinear resizing from ``n_in`` to ``n_out`` samples,
    for output samples ``start..stop-1`` (pixel-centre alignment, as torch/OpenCV)."""
    dst = np.arange(start, stop, dtype=np.float64)
    if n_in == n_out:
        idx = dst.astype(np.int64)
        return idx, idx, np.zeros(len(idx), np.float32)
    src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _resample_axis(x: np.ndarray, axis: int, taps, origin: int) -> np.ndarray:
    i0, i1, w = taps
    if not w.any():
        return np.take(x, i0 - origin, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(x, i0 - origin, axis=axis) * (1 - w) + np.take(x, i1 - origin, axis=axis) * w


def _source_span(taps) -> tuple[int, int]:
    i0, i1, _ = taps
    return (int(i0.min()), int(i1.max()) + 1) if len(i0) else (0, 0)


@dataclass(frozen=True)
class NetworkLayout:
    """Where the network tiles of one whole-image pass lie, and which block owns each.

    Coordinates: *image* pixels; *network* pixels of the image resized by ``rescale``; *padded*
    network pixels (network + the zero padding of :func:`~cp2_engine.inference.run_tiled`), in
    which the tile grid lives.

    Examples
    --------
    >>> layout = NetworkLayout.build((1000, 1000), blocksize=500, rescale=1.0)
    >>> layout.grid.n_tiles, len(layout.tiles_of(0, 0))
    (36, 9)
    """

    shape: tuple[int, int]
    net_shape: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    grid: TileGrid
    blocksize: int

    @classmethod
    def build(
        cls,
        shape,
        *,
        blocksize: int,
        rescale: float,
        bsize: int = 224,
        tile_overlap: float = 0.1,
        augment: bool = False,
    ) -> NetworkLayout:
        """Lay out the tiles of one pass over an image of ``shape`` (H, W) at ``rescale``."""
        shape = (int(shape[0]), int(shape[1]))
        net_shape = (int(shape[0] * rescale), int(shape[1] * rescale))  # as resize_image
        if min(net_shape) < 2:
            raise ValueError(f"image {shape} is too small for diameter rescaling by {rescale:.3g}")
        pads = pad_widths(net_shape, augment=augment, bsize=bsize)
        padded = tuple(n + sum(p) for n, p in zip(net_shape, pads, strict=True))
        grid = make_tile_grid(padded, bsize=bsize, tile_overlap=tile_overlap, augment=augment)
        return cls(shape, net_shape, pads, grid, int(blocksize))

    def _owner(self, axis: int, start: int) -> int:
        """Block row (axis 0) or column (axis 1) that owns a tile starting at ``start``."""
        centre = start + (self.grid.tile[axis] - 1) / 2 - self.pads[axis][0]
        image_pos = (centre + 0.5) * self.shape[axis] / self.net_shape[axis] - 0.5
        n_blocks = math.ceil(self.shape[axis] / self.blocksize)
        return min(max(int(image_pos // self.blocksize), 0), n_blocks - 1)

    @functools.cached_property
    def _owners(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(
            tuple(self._owner(axis, s) for s in starts)
            for axis, starts in enumerate((self.grid.ystarts, self.grid.xstarts))
        )

    def _owned(self, axis: int, block: int) -> list[int]:
        return [k for k, b in enumerate(self._owners[axis]) if b == block]

    def tiles_of(self, i: int, j: int) -> list[tuple[int, int, int, int]]:
        """``(row, column, ystart, xstart)`` of the tiles that block ``(i, j)`` runs."""
        rows, cols = self._owned(0, i), self._owned(1, j)
        ys, xs = self.grid.ystarts, self.grid.xstarts
        return [(r, c, ys[r], xs[c]) for r in rows for c in cols]

    def window_of(self, i: int, j: int) -> Window | None:
        """Padded-network window covered by block ``(i, j)``'s tiles (None: it has none)."""
        rows, cols = self._owned(0, i), self._owned(1, j)
        if not rows or not cols:
            return None
        ty, tx = self.grid.tile
        ys, xs = self.grid.ystarts, self.grid.xstarts
        return ys[rows[0]], ys[rows[-1]] + ty, xs[cols[0]], xs[cols[-1]] + tx

    def _net_taps(self, axis: int, start: int, stop: int):
        """Image-axis taps for network samples ``start..stop-1`` (unpadded network coords)."""
        return _linear_taps(self.shape[axis], self.net_shape[axis], start, stop)

    def _image_taps(self, axis: int, start: int, stop: int):
        """Network-axis taps for image samples ``start..stop-1``."""
        return _linear_taps(self.net_shape[axis], self.shape[axis], start, stop)

    def _inside(self, window: Window) -> Window:
        """The part of a padded window that holds the image, in unpadded network coords."""
        (py, _), (px, _) = self.pads
        y0, y1, x0, x1 = window
        ny, nx = self.net_shape
        return max(y0 - py, 0), min(y1 - py, ny), max(x0 - px, 0), min(x1 - px, nx)

    def image_region_for(self, window: Window) -> tuple[slice, slice] | None:
        """Image pixels needed to build the network input of a padded window (None: none)."""
        y0, y1, x0, x1 = self._inside(window)
        if y0 >= y1 or x0 >= x1:
            return None
        sy, sx = _source_span(self._net_taps(0, y0, y1)), _source_span(self._net_taps(1, x0, x1))
        return slice(*sy), slice(*sx)

    def window_for_crop(self, crop: tuple[slice, slice]) -> Window:
        """Padded-network window whose blended output resizes to the image ``crop``."""
        (py, _), (px, _) = self.pads
        sy = _source_span(self._image_taps(0, crop[0].start, crop[0].stop))
        sx = _source_span(self._image_taps(1, crop[1].start, crop[1].stop))
        return sy[0] + py, sy[1] + py, sx[0] + px, sx[1] + px

    def sources_for(self, window: Window, n_blocks: tuple[int, int]) -> list[tuple[int, int]]:
        """Blocks whose tile windows meet ``window`` (their sums are needed to blend it)."""
        near = []
        for axis in (0, 1):
            # a block's tiles have their centres in its core: they reach half a tile beyond it
            scale = self.shape[axis] / self.net_shape[axis]
            reach = math.ceil((self.grid.tile[axis] / 2 + 2) * scale / self.blocksize)
            pad = self.pads[axis][0]
            lo, hi = window[2 * axis] - pad, window[2 * axis + 1] - pad
            first = int(max(lo * scale, 0) // self.blocksize) - reach
            last = int(max(hi * scale, 0) // self.blocksize) + reach
            near.append(range(max(first, 0), min(last, n_blocks[axis] - 1) + 1))
        return [(i, j) for i in near[0] for j in near[1] if _meets(self.window_of(i, j), window)]


def _meets(a: Window | None, b: Window) -> bool:
    return a is not None and a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _intersection(a: Window, b: Window) -> Window:
    return max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])


# ----------------------------------------------------------------------------- normalisation
def _exact_channels(dtype, n_raw_channels: int, channels) -> tuple[bool, bool]:
    """Whether each network channel is a plain copy of an 8/16-bit integer image channel."""
    dtype = np.dtype(dtype)
    small_int = np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2
    chan = int(channels[0])
    return small_int and (chan > 0 or n_raw_channels == 1), small_int


def sample_stride(shape) -> int:
    """Stride of the regular subsample used for the percentiles of non-integer channels."""
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / _SAMPLE_PIXELS)))


def block_intensity_stats(raw, *, core: tuple[slice, slice], shape, config) -> list:
    """Intensity summary of one block's core, one entry per used network channel.

    Entries are ``("hist", counts)`` (counts of every 8/16-bit value, offset by the dtype's
    minimum) or ``("sample", values)`` (the pixels on the whole image's regular subsample grid).

    Examples
    --------
    >>> from cp2_engine.inference._config import SegmentConfig
    >>> raw = np.arange(16, dtype=np.uint8).reshape(4, 4)
    >>> core = (slice(0, 4), slice(0, 4))
    >>> kind, counts = block_intensity_stats(raw, core=core, shape=(4, 4),
    ...                                      config=SegmentConfig())[0]
    >>> kind, int(counts.sum()), counts.shape
    ('hist', 16, (256,))
    """
    raw = np.asarray(raw)
    x = convert_image(raw, channels=config.channels, channel_axis=config.channel_axis)
    exact = _exact_channels(raw.dtype, 1 if raw.ndim == 2 else raw.shape[-1], config.channels)
    stride = sample_stride(shape)
    oy, ox = (-core[0].start) % stride, (-core[1].start) % stride
    used = 2 if config.channels[1] > 0 else 1
    out = []
    for c in range(used):
        if exact[c]:
            info = np.iinfo(raw.dtype)
            values = (x[c].astype(np.int64) - info.min).ravel()
            out.append(("hist", np.bincount(values, minlength=info.max - info.min + 1)))
        else:
            out.append(("sample", x[c, oy::stride, ox::stride].ravel().copy()))
    return out


def _percentiles_from_hist(counts: np.ndarray, qs, offset: int) -> list[float]:
    """``numpy.percentile`` (linear) of the values whose histogram is ``counts``."""
    n = int(counts.sum())
    cum = np.cumsum(counts)

    def value(rank: int) -> float:
        return float(np.searchsorted(cum, rank, side="right") + offset)

    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        k = math.floor(pos)
        lo, hi = value(k), value(min(k + 1, n - 1))
        out.append(lo + (pos - k) * (hi - lo))
    return out


def _merge_stats(total: list | None, stats: list) -> list:
    if total is None:
        return [(k, v if k == "hist" else [v]) for k, v in stats]
    return [
        (k, t + v) if k == "hist" else (k, [*t, v])
        for (k, t), (_, v) in zip(total, stats, strict=True)
    ]


def intensity_range(block_stats, *, dtype) -> list[tuple[float, float]]:
    """Combine :func:`block_intensity_stats` of all blocks into (1st, 99th) percentiles.

    ``block_stats`` may be any iterable (e.g. results as they arrive): histograms are added up
    as they come, so memory does not grow with the number of blocks.

    Examples
    --------
    >>> from cp2_engine.inference._config import SegmentConfig
    >>> raw = np.arange(100, dtype=np.uint16).reshape(10, 10)
    >>> halves = [(slice(0, 5), slice(0, 10)), (slice(5, 10), slice(0, 10))]
    >>> stats = [block_intensity_stats(raw[c], core=c, shape=(10, 10), config=SegmentConfig())
    ...          for c in halves]
    >>> [round(v, 2) for v in intensity_range(stats, dtype=raw.dtype)[0]]
    [0.99, 98.01]
    """
    total = None
    for stats in block_stats:
        total = _merge_stats(total, stats)
    if total is None:
        raise ValueError("no block statistics to combine")
    ranges = []
    for kind, value in total:
        if kind == "hist":
            lo, hi = _percentiles_from_hist(value, (_LOWER, _UPPER), np.iinfo(dtype).min)
        else:
            lo, hi = (float(v) for v in np.percentile(np.concatenate(value), [_LOWER, _UPPER]))
        ranges.append((lo, hi))
    return ranges


def _normalised(raw, config, ranges, nchan: int) -> np.ndarray:
    """Network channels of an image crop, normalised with whole-image percentiles."""
    x = convert_image(raw, channels=config.channels, channel_axis=config.channel_axis)
    if config.normalize:
        for c, (lo, hi) in enumerate(ranges):
            if hi - lo <= MIN_RANGE:
                x[c] = 0
            else:
                x[c] -= np.float32(lo)
                x[c] *= np.float32(1.0 / (hi - lo))
    if config.invert:
        x[0] = 1.0 - x[0]
    return fit_channels(x, nchan)


# ----------------------------------------------------------------------------- network stage
def network_input(raw, *, region, window: Window, layout: NetworkLayout, config, ranges, nchan):
    """The padded network input under ``window``, built from the image crop ``raw`` at ``region``.

    Parameters
    ----------
    raw : ndarray
        The image pixels at ``region`` (from :meth:`NetworkLayout.image_region_for`).
    region : tuple of slice
        Where ``raw`` lies in the image.
    window : (int, int, int, int)
        Padded-network window.
    layout : NetworkLayout
    config : SegmentConfig
    ranges : list of (float, float)
        Whole-image percentiles per used channel (:func:`intensity_range`).
    nchan : int
        Channels of the network input.

    Returns
    -------
    ndarray
        float32 ``(nchan, window height, window width)``; zero in the padding.
    """
    y0, y1, x0, x1 = window
    out = np.zeros((nchan, y1 - y0, x1 - x0), np.float32)
    ny0, ny1, nx0, nx1 = layout._inside(window)
    if ny0 >= ny1 or nx0 >= nx1:
        return out
    x = _normalised(raw, config, ranges, nchan)
    x = _resample_axis(x, 1, layout._net_taps(0, ny0, ny1), region[0].start)
    x = _resample_axis(x, 2, layout._net_taps(1, nx0, nx1), region[1].start)
    (py, _), (px, _) = layout.pads
    out[:, ny0 + py - y0 : ny1 + py - y0, nx0 + px - x0 : nx1 + px - x0] = x
    return out


def network_sums(model, x: np.ndarray, *, tiles, window: Window, tile, config) -> np.ndarray:
    """Run a block's tiles; return float32 ``(nout + 1, h, w)``: taper x output sums, then the
    taper sum, over ``window``.

    Examples
    --------
    >>> from cp2_engine.inference._config import SegmentConfig
    >>> from cp2_engine.inference._model import Model
    >>> layout = NetworkLayout.build((300, 300), blocksize=300, rescale=1.0)
    >>> window = layout.window_of(0, 0)
    >>> x = np.zeros((2, window[1] - window[0], window[3] - window[2]), np.float32)
    >>> network_sums(Model.random(), x, tiles=layout.tiles_of(0, 0), window=window,
    ...              tile=layout.grid.tile, config=SegmentConfig()).shape
    (4, 320, 320)
    """
    import torch

    from cp2_engine.inference import accumulate_tiles
    from cp2_engine.network import get_runner, use_channels_last

    runner = get_runner(
        model.net,
        device=model.device,
        precision=config.precision,
        backend=config.backend,
        channels_last=use_channels_last(config.channels_last, model.device),
    )
    acc, weight, _ = accumulate_tiles(
        runner,
        torch.from_numpy(np.ascontiguousarray(x)).to(model.device),
        tiles,
        tile=tile,
        origin=(window[0], window[2]),
        batch_size=config.batch_size,
        augment=config.augment,
    )
    return torch.cat([acc, weight[None]]).cpu().numpy()


def blended_output(read_sums, *, sources, crop, layout: NetworkLayout) -> np.ndarray:
    """Blend the sums of ``sources`` over an image crop and resize them to the image scale.

    Parameters
    ----------
    read_sums : callable
        ``read_sums(block, window)`` returns that block's sums (:func:`network_sums`) over the
        padded-network ``window``, which lies inside the block's own window.
    sources : list of (int, int)
        Blocks whose windows meet the crop's window (:meth:`NetworkLayout.sources_for`).
    crop : tuple of slice
        Image region.
    layout : NetworkLayout

    Returns
    -------
    ndarray
        float32 ``(nout, crop height, crop width)``: flows and cell probability, as one pass of
        :meth:`cp2_engine.inference.Model.segment` gives them there before the dynamics.
    """
    window = layout.window_for_crop(crop)
    sums = None
    for block in sources:
        inter = _intersection(layout.window_of(*block), window)
        part = read_sums(block, inter)
        if sums is None:
            shape = (part.shape[0], window[1] - window[0], window[3] - window[2])
            sums = np.zeros(shape, np.float32)
        y0, x0 = inter[0] - window[0], inter[2] - window[2]
        sums[:, y0 : y0 + part.shape[1], x0 : x0 + part.shape[2]] += part
    if sums is None or not (sums[-1] > 0).all():
        raise RuntimeError(f"network sums do not cover the crop {crop}: a source block is missing")
    y = sums[:-1] / sums[-1]
    (py, _), (px, _) = layout.pads
    y = _resample_axis(y, 1, layout._image_taps(0, crop[0].start, crop[0].stop), window[0] - py)
    return _resample_axis(y, 2, layout._image_taps(1, crop[1].start, crop[1].stop), window[2] - px)
