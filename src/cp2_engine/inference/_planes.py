"""Stacks for the 2-D network: axis resolution and normalisation of a z-stack, resizing of
volumes, and the network run over many planes of the same size with tiles batched across planes.

Every plane is padded, tiled and blended exactly as :func:`run_tiled` does for one image (same
grid, same taper, same accumulation order); only the forward passes group tiles of several
planes, so thin planes (ZY / ZX planes of a short stack) still fill a batch.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from cp2_engine.inference._tiling import (
    grid_tiles,
    make_tile_grid,
    pad_widths,
    taper_mask,
)
from cp2_engine.inference._transforms import (
    _MAX_CHANNELS,
    check_image,
    convert_image,
    fit_channels,
    normalize99,
    resize_image,
)
from cp2_engine.network import get_runner
from cp2_engine.util import ProgressEvent, drain


@dataclass(frozen=True)
class PlaneProgress(ProgressEvent):
    """Progress of a z-stack segmentation: ``done`` of ``total`` steps of ``stage``.

    ``stage`` is ``"YX planes"``, ``"ZX planes"`` or ``"ZY planes"`` (the network on the planes
    of one orientation, ``do_3d``), ``"planes"`` (the network on the planes of a stitched run)
    or ``"masks"`` (the dynamics and clustering: 0 of 1 before, 1 of 1 after). Make one with
    :meth:`of`, which writes the message.

    Examples
    --------
    >>> PlaneProgress.of("YX planes", 3, 8)
    PlaneProgress(done=3, total=8, message='YX planes 3/8', stage='YX planes')
    >>> PlaneProgress.of("masks", 0, 1).message
    'computing masks'
    """

    tick: ClassVar[bool] = True

    stage: str

    @classmethod
    def of(cls, stage: str, done: int, total: int) -> PlaneProgress:
        """The event of ``done`` of ``total`` steps of ``stage``, with its message."""
        if stage == "masks":
            text = "masks computed" if done >= total else "computing masks"
        else:
            text = f"{stage} {done}/{total}"
        return cls(stage, done=done, total=total, message=text)


def _channel_axis4(shape, z_axis: int, channel_axis: int | None) -> int:
    if channel_axis is not None:
        if not -4 <= channel_axis < 4:
            raise ValueError(f"channel_axis={channel_axis} is out of range for shape {shape}")
        channel_axis %= 4
        if channel_axis == z_axis:
            raise ValueError(f"channel_axis and z_axis are both {z_axis} for shape {shape}")
        return channel_axis
    small = [a for a in range(4) if a != z_axis and shape[a] < _MAX_CHANNELS]
    if len(small) != 1:
        what = "no axis" if not small else f"axes {small}"
        raise ValueError(
            f"cannot tell the channel axis of the 4-D stack {shape} (z_axis={z_axis}): {what} "
            f"other than z shorter than {_MAX_CHANNELS}; pass channel_axis= (and z_axis=)"
        )
    return small[0]


def stack_to_zyxc(image, *, z_axis: int | None, channel_axis: int | None) -> np.ndarray:
    """A ``(Z, Y, X, C)`` view of a ``(Z, Y, X)`` or 4-D multi-channel stack.

    ``z_axis`` defaults to 0. For a 4-D stack the channel axis is ``channel_axis`` or else the
    one non-z axis shorter than 10 (an error names the axes when there are none or several).

    Examples
    --------
    >>> stack_to_zyxc(np.zeros((5, 2, 30, 40)), z_axis=None, channel_axis=None).shape
    (5, 30, 40, 2)
    """
    arr = check_image(image)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"a z-stack must be (Z, Y, X) or (Z, Y, X, C) (any axis order with z_axis= and "
            f"channel_axis=), got shape {arr.shape}"
            + ("; a 2-D image needs do_3d=False and stitch_threshold=0" if arr.ndim == 2 else "")
        )
    z = 0 if z_axis is None else z_axis
    if not -arr.ndim <= z < arr.ndim:
        raise ValueError(f"z_axis={z_axis} is out of range for a stack of shape {arr.shape}")
    z %= arr.ndim
    if arr.ndim == 3:
        if channel_axis is not None:
            raise ValueError(
                f"channel_axis={channel_axis} given for the 3-D array {arr.shape}: a stack with "
                "channels is 4-D; a 2-D multi-channel image needs do_3d=False"
            )
        return np.moveaxis(arr, z, 0)[..., None]
    c = _channel_axis4(arr.shape, z, channel_axis)
    rest = [a for a in range(4) if a not in (z, c)]
    return np.transpose(arr, (z, *rest, c))


def prepare_stack(image, config, nchan: int) -> np.ndarray:
    """Network input ``(nchan, Z, Y, X)`` of a stack, normalised over the whole stack.

    Channel selection per plane as :func:`convert_image`; then, like Cellpose 3.1 for ``do_3D``
    and stitching (``norm3D=True``), each used channel is scaled by the 1st/99th percentiles of
    the whole stack.
    """
    zyxc = stack_to_zyxc(image, z_axis=config.z_axis, channel_axis=config.channel_axis)
    if min(zyxc.shape[1:3]) < 2:
        raise ValueError(f"stack planes must be at least 2 x 2, got {zyxc.shape[1:3]}")
    planes = [convert_image(p, channels=config.channels, channel_axis=-1) for p in zyxc]
    x = np.stack(planes, axis=1)  # (2, Z, Y, X)
    if config.normalize:
        x[0] = normalize99(x[0])
        if config.channels[1] > 0:
            x[1] = normalize99(x[1])
    if config.invert:
        x[0] = 1.0 - x[0]
    return fit_channels(x, nchan)


def resize_planes(vol: np.ndarray, shape, *, interpolation: str = "linear") -> np.ndarray:
    """Resize the last two axes of ``(..., H, W)`` to ``shape`` (every plane alike)."""
    shape = tuple(int(s) for s in shape)
    if vol.shape[-2:] == shape:
        return vol
    flat = vol.reshape(-1, *vol.shape[-2:])
    out = resize_image(flat, shape=shape, interpolation=interpolation)
    return out.reshape(*vol.shape[:-2], *shape)


def resize_volume(vol: np.ndarray, zyx, *, interpolation: str = "linear") -> np.ndarray:
    """Resize the last three axes (Z, Y, X) of ``vol``: first Y and X, then Z (as Cellpose)."""
    out = resize_planes(vol, zyx[1:], interpolation=interpolation)
    if out.shape[-3] != int(zyx[0]):
        swapped = np.swapaxes(out, -3, -2)  # (..., Y, Z, X)
        out = np.swapaxes(
            resize_planes(swapped, (zyx[0], zyx[2]), interpolation=interpolation), -3, -2
        )
    return np.ascontiguousarray(out)


def run_planes(net, vol: np.ndarray, config, *, device, channels_last: bool):
    """Run the network on every plane ``vol[:, i]`` of ``vol`` ``(C, N, H, W)``.

    Returns the float32 ``(nout, N, H, W)`` blended outputs and the float64 sum of the tile
    styles with the number of tiles (for an average style). :func:`iter_run_planes` is the
    same run as a generator of progress events.
    """
    return drain(iter_run_planes(net, vol, config, device=device, channels_last=channels_last))


def iter_run_planes(
    net, vol: np.ndarray, config, *, device, channels_last: bool, stage: str = "planes"
) -> Generator[PlaneProgress, None, tuple]:
    """:func:`run_planes` as a generator: yields ``PlaneProgress.of(stage, done, N)`` first with
    ``done=0``, then after every batch of tiles that finishes planes; returns what
    :func:`run_planes` returns.

    Examples
    --------
    >>> from cp2_engine.inference import Model, SegmentConfig
    >>> net, config = Model.random(seed=0).net, SegmentConfig(batch_size=2)
    >>> gen = iter_run_planes(net, np.ones((2, 3, 16, 16)), config, device="cpu",
    ...                       channels_last=False, stage="YX planes")
    >>> events = []
    >>> out, style, n_tiles = drain(gen, on_event=events.append)
    >>> [e.done for e in events], out.shape
    ([0, 2, 3], (3, 3, 16, 16))
    """
    c, n, h, w = vol.shape
    bsize, augment, batch_size = config.bsize, config.augment, config.batch_size
    py, px = pad_widths((h, w), augment=augment, bsize=bsize)
    ph, pw = h + sum(py), w + sum(px)
    grid = make_tile_grid((ph, pw), bsize=bsize, tile_overlap=config.tile_overlap, augment=augment)
    tiles = grid_tiles(grid)
    (ty, tx), dev = grid.tile, torch.device(device)
    runner = get_runner(
        net,
        device=dev,
        precision=config.precision,
        backend=config.backend,
        channels_last=channels_last,
    )
    mask = torch.from_numpy(taper_mask(ty, tx)).to(dev)
    weight = torch.zeros((ph, pw), device=dev)
    for _, _, ys, xs in tiles:
        weight[ys : ys + ty, xs : xs + tx] += mask
    padded = torch.from_numpy(np.pad(vol.astype(np.float32, copy=False), ((0, 0), (0, 0), py, px)))
    jobs = [(p, t) for p in range(n) for t in tiles]
    out, acc, style = None, {}, torch.zeros(0, dtype=torch.float64)
    batch = torch.empty((min(batch_size, len(jobs)), c, ty, tx), device=dev)
    done = 0
    yield PlaneProgress.of(stage, done, n)
    for b0 in range(0, len(jobs), batch_size):
        chunk, before = jobs[b0 : b0 + batch_size], done
        for k, (p, (iy, ix, ys, xs)) in enumerate(chunk):
            t = padded[:, p, ys : ys + ty, xs : xs + tx].to(dev)
            batch[k] = torch.flip(t, [d for d, o in ((-2, iy % 2), (-1, ix % 2)) if o]) if (
                augment
            ) else t  # fmt: skip
        y, styles = runner(batch[: len(chunk)])
        style = styles.sum(0).double().cpu() + (style if style.numel() else 0)
        if out is None:
            out = np.empty((y.shape[1], n, h, w), np.float32)
        for k, (p, (iy, ix, ys, xs)) in enumerate(chunk):
            yk = _unflip(y[k], iy, ix) if augment else y[k]
            a = acc.setdefault(p, torch.zeros((y.shape[1], ph, pw), device=dev))
            a[:, ys : ys + ty, xs : xs + tx].addcmul_(yk, mask)
            if (iy, ix, ys, xs) == tiles[-1]:
                out[:, p] = (acc.pop(p) / weight)[:, py[0] : py[0] + h, px[0] : px[0] + w].cpu()
                done += 1
        if done > before:
            yield PlaneProgress.of(stage, done, n)
    return out, style.numpy(), len(jobs)


def _unflip(y: torch.Tensor, iy: int, ix: int) -> torch.Tensor:
    dims = [d for d, odd in ((-2, iy % 2), (-1, ix % 2)) if odd]
    y = torch.flip(y, dims) if dims else y.clone()
    if iy % 2:
        y[0] = -y[0]
    if ix % 2:
        y[1] = -y[1]
    return y
