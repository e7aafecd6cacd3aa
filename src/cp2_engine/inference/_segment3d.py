"""Segmenting z-stacks, as Cellpose 3.1 does.

* **3-D** (``do_3d=True``): the stack is normalised as a whole, resized by ``rescale`` in Y and X
  and by ``anisotropy * rescale`` in Z; the 2-D network runs on every YX plane, every ZX plane
  (planes along Y) and every ZY plane (planes along X). The three outputs are summed in that
  order: cell probability = YX + ZX + ZY, dZ = ZX + ZY, dY = YX + ZY, dX = YX + ZX (Cellpose's
  ``run_3D``). Optional Gaussian smoothing of the flows (``flow3d_smooth``), resizing back, then
  the 3-D dynamics and clustering (:func:`cp2_engine.postprocess.compute_masks_3d`; no flow-error
  QC in 3-D).
* **Stitched 2-D** (``stitch_threshold > 0``): every plane is segmented in 2-D (flow-error QC and
  hole filling per plane, no minimum size), the planes' masks are linked by IoU
  (:func:`cp2_engine.postprocess.stitch_planes`), then 3-D hole filling and ``min_size``.

The diameter of a stack is ``config.diameter`` or the model's default (no size-model estimate
on stacks, as in Cellpose).

:func:`iter_segment_stack` is the run as a generator of :class:`PlaneProgress` events (after
every batch of planes of each orientation, and around the masks); :func:`segment_stack` drains it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator

import numpy as np

from cp2_engine.inference._config import SegmentConfig, resolve_niter
from cp2_engine.inference._planes import (
    PlaneProgress,
    iter_run_planes,
    prepare_stack,
    resize_planes,
    resize_volume,
)
from cp2_engine.network import use_channels_last
from cp2_engine.util import drain

logger = logging.getLogger(__name__)

__all__ = ["is_stack_run", "iter_segment_stack", "masks_from_stack_flows", "segment_stack"]


def is_stack_run(config: SegmentConfig) -> bool:
    """Whether ``config`` asks for a z-stack run (``do_3d`` or ``stitch_threshold > 0``)."""
    return bool(config.do_3d or config.stitch_threshold > 0)


def masks_from_stack_flows(flows, cellprob, *, config: SegmentConfig, niter: int) -> np.ndarray:
    """Masks of a stack from its flows: 3-D dynamics for ``(3, Z, Y, X)`` flows, per-plane 2-D
    masks stitched by IoU for ``(2, Z, Y, X)`` flows (``config.stitch_threshold``)."""
    from cp2_engine.postprocess import (
        compute_masks,
        compute_masks_3d,
        fill_holes_and_remove_small_masks_3d,
        stitch_planes,
    )

    if flows.shape[0] == 3:
        return compute_masks_3d(
            flows,
            cellprob,
            niter=niter,
            cellprob_threshold=config.cellprob_threshold,
            min_size=config.min_size,
            max_size_fraction=config.max_size_fraction,
        )
    planes = np.stack(
        [
            compute_masks(
                flows[:, z],
                cellprob[z],
                niter=niter,
                cellprob_threshold=config.cellprob_threshold,
                flow_threshold=config.flow_threshold,
                min_size=0,
                max_size_fraction=config.max_size_fraction,
            )
            for z in range(cellprob.shape[0])
        ]
    )
    if config.stitch_threshold > 0 and planes.shape[0] > 1:
        planes = stitch_planes(planes, stitch_threshold=config.stitch_threshold)
    return fill_holes_and_remove_small_masks_3d(planes, min_size=config.min_size)


def _net_run(model, vol, config, stage: str) -> Generator:
    """The network on every plane of ``vol``: yields progress, returns ``run_planes``' output."""
    return iter_run_planes(
        model.net,
        vol,
        config,
        device=model.device,
        channels_last=use_channels_last(config.channels_last, model.device),
        stage=stage,
    )


def _masks(flows, cellprob, config: SegmentConfig, niter: int, timer) -> Generator:
    """:func:`masks_from_stack_flows` between two ``"masks"`` progress events."""
    yield PlaneProgress.of("masks", 0, 1)
    with timer("masks"):
        masks = masks_from_stack_flows(flows, cellprob, config=config, niter=niter)
    yield PlaneProgress.of("masks", 1, 1)
    return masks


def _unit_style(style_sum: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(style_sum)
    return (style_sum / norm if norm > 0 else style_sum).astype(np.float32)


def _flows_3d(model, x: np.ndarray, config: SegmentConfig, timer) -> Generator:
    """Network output ``(4, Z', Y', X')`` = (dZ, dY, dX, cellprob) at network scale, style."""
    with timer("network"):  # planes along Z, Y, X: (3, Z, Y, X), (3, Y, Z, X), (3, X, Z, Y)
        yx, style, _ = yield from _net_run(model, x, config, "YX planes")
        zx, _, _ = yield from _net_run(model, np.swapaxes(x, 1, 2), config, "ZX planes")
        zy, _, _ = yield from _net_run(model, np.moveaxis(x, 3, 1), config, "ZY planes")
    with timer("combine"):
        zx = np.swapaxes(zx, 1, 2)  # -> (3, Z, Y, X): (dZ, dX, cellprob)
        zy = np.moveaxis(zy, 1, 3)  # -> (3, Z, Y, X): (dZ, dY, cellprob)
        yf = np.zeros((4, *x.shape[1:]), np.float32)
        yf[3] += yx[2]
        yf[1] += yx[0]
        yf[2] += yx[1]
        yf[3] += zx[2]
        yf[0] += zx[0]
        yf[2] += zx[1]
        yf[3] += zy[2]
        yf[0] += zy[0]
        yf[1] += zy[1]
    return yf, _unit_style(style)


def _segment_3d(model, x, config: SegmentConfig, diameter: float, timer) -> Generator:
    from scipy.ndimage import gaussian_filter

    rescale = model.diam_mean / diameter
    aniso = 1.0 if config.anisotropy is None else float(config.anisotropy)
    shape = x.shape[1:]
    net_shape = (int(shape[0] * aniso * rescale), int(shape[1] * rescale), int(shape[2] * rescale))
    if min(net_shape) < 2:
        raise ValueError(f"the stack {shape} would be {net_shape} for the network: too small")
    with timer("resize"):
        xs = resize_volume(x, net_shape) if net_shape != shape else x
    yf, style = yield from _flows_3d(model, xs, config, timer)
    if config.flow3d_smooth > 0:
        with timer("smooth"):
            s = config.flow3d_smooth
            yf[:3] = gaussian_filter(yf[:3], (0, s, s, s))
    niter = resolve_niter(config.niter, rescale=rescale, resample=config.resample)
    if config.resample and yf.shape[1:] != shape:
        with timer("resize"):
            yf = resize_volume(yf, shape)
    masks = yield from _masks(yf[:3], yf[3], config, niter, timer)
    if masks.shape != shape:
        with timer("resize"):
            masks = resize_volume(masks, shape, interpolation="nearest")
            yf = resize_volume(yf, shape)
    return masks, yf[:3], yf[3], style, rescale, niter


def _segment_stitched(model, x, config: SegmentConfig, diameter: float, timer) -> Generator:
    rescale = model.diam_mean / diameter
    shape = x.shape[1:]
    net_hw = (int(shape[1] * rescale), int(shape[2] * rescale))
    if min(net_hw) < 2:
        raise ValueError(f"planes of {shape[1:]} would be {net_hw} for the network: too small")
    with timer("network"):
        y, style, _ = yield from _net_run(model, resize_planes(x, net_hw), config, "planes")
    niter = resolve_niter(config.niter, rescale=rescale, resample=config.resample)
    if config.resample:
        with timer("resize"):
            y = resize_planes(y, shape[1:])
    masks = yield from _masks(y[:2], y[2], config, niter, timer)
    if masks.shape != shape:
        with timer("resize"):
            masks = resize_planes(masks, shape[1:], interpolation="nearest")
            y = resize_planes(y, shape[1:])
    return masks, y[:2], y[2], _unit_style(style), rescale, niter


def segment_stack(model, image, config: SegmentConfig, timer) -> dict:
    """:meth:`Model.segment` for a stack (``do_3d`` or ``stitch_threshold``): the fields of its
    Segmentation, with ``(Z, Y, X)`` masks and cell probability and ``(3 or 2, Z, Y, X)`` flows.
    """
    return drain(iter_segment_stack(model, image, config, timer))


def iter_segment_stack(model, image, config: SegmentConfig, timer) -> Generator:
    """:func:`segment_stack` as a generator: yields :class:`PlaneProgress` events (none for a
    constant stack), returns the fields of the Segmentation."""
    if config.do_3d and config.augment:
        raise ValueError("augment is not supported with do_3d (flips of thin ZY/ZX planes)")
    with timer("prepare"):
        x = prepare_stack(image, config, model.net.nchan)
    diameter = float(config.diameter or model._default_diameter())
    if not config.diameter:
        logger.info("stack: no size-model estimate in 3-D; diameter %.1f px", diameter)
    if not x.any():
        logger.warning("the stack is constant: returning empty masks without running the network")
        shape = x.shape[1:]
        niter = resolve_niter(config.niter, rescale=1.0, resample=config.resample)
        flows = np.zeros((3 if config.do_3d else 2, *shape), np.float32)
        style = np.zeros(model.net.nbase[-1], np.float32)
        out = (np.zeros(shape, np.uint16), flows, np.zeros(shape, np.float32), style)
        out = (*out, model.diam_mean / diameter, niter)
    else:
        run = _segment_3d if config.do_3d else _segment_stitched
        out = yield from run(model, x, config, diameter, timer)
    masks, flows, cellprob, style, rescale, niter = out
    return {
        "masks": masks,
        "flows": np.ascontiguousarray(flows),
        "cellprob": np.ascontiguousarray(cellprob),
        "style": style,
        "diameter": diameter,
        "rescale": rescale,
        "niter": niter,
        "config": dataclasses.replace(config, diameter=diameter),
    }
