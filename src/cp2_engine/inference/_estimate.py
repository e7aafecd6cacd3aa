"""``diameter=None`` at about one extra network pass: bounded style pass, bounded refinement.

The estimate follows :mod:`cp2_engine.inference._diameter` (size model first, then masks
re-measured while they disagree with the scale they were segmented at); what changes is what
each step costs and when it stops:

1. **Style pass**: the style is averaged over a quarter of the image's tiles at the model's
   training scale, at least 1 and at most :data:`STYLE_TILES` (one batch), spread evenly.
2. **Refinement steps**: a step is the whole segmentation at its diameter, kept, when the
   network sees the image in at most :data:`WHOLE_TILES` tiles at that scale and the step
   may well be the last one (the chain's first step, or the previous step's masks measured
   within ``2 * CLOSE`` of its diameter). Otherwise it segments the centre window that the
   network sees as one tile, and measures the masks that do not touch the window's cut
   edges, each weighted by the inverse number of window positions that would hold it whole
   (the Miles-Lantuejoul edge correction: large masks touch a cut more often, and an
   unweighted median would be too small). The chain stops once the masks measure within
   :data:`CLOSE` of the step's diameter (Cellpose 3's estimate is this with one step), and
   otherwise goes on (a size model far off: stained tissue, unseen image types), with the
   model's training diameter as a second start.
3. **The result**: when the last step was a whole segmentation, it *is* the result (its masks
   agree with the scale they were segmented at within ``CLOSE``, inside the network's
   training scale jitter of +-25 %); otherwise the image is segmented once at the measured
   diameter.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
from scipy import ndimage

from cp2_engine.inference._diameter import refine_diameter
from cp2_engine.inference._segmentation import _Timer
from cp2_engine.inference._tiling import make_tile_grid, pad_widths, tiled_style
from cp2_engine.inference._transforms import resize_image

__all__ = ["CLOSE", "STYLE_TILES", "WHOLE_TILES", "estimate_and_segment"]

logger = logging.getLogger(__name__)

#: The style pass runs on at most this many tiles.
STYLE_TILES = 8
#: A chain stops when the masks measure within this (|log ratio|) of the step's diameter.
CLOSE = 0.2
#: Refinement steps segment the whole image when the network sees it in at most this many tiles.
WHOLE_TILES = 4


@dataclasses.dataclass
class _Steps:
    """What the refinement has segmented: whole-image results by diameter."""

    whole: dict = dataclasses.field(default_factory=dict)
    gap: float | None = None  # |log(measured / used)| of the last step


def _gap(measured: float, used: float) -> float:
    return abs(math.log(measured / used)) if measured > 0 else math.inf


def _style_diameter(model, x: np.ndarray, config) -> float:
    d0 = model._default_diameter()
    rescale = model.diam_mean / d0
    xs = resize_image(x, rescale=rescale) if rescale != 1.0 else x
    n_tiles = _n_tiles(xs.shape[1:], 1.0, config)
    style = tiled_style(
        model.runner(config), xs, max_tiles=min(STYLE_TILES, max(1, n_tiles // 4)),
        bsize=config.bsize, tile_overlap=config.tile_overlap, batch_size=config.batch_size,
    )  # fmt: skip
    d = float(model.size_model.diameter_from_style(style))
    return d if math.isfinite(d) and d > 0 else model.diam_mean


def _n_tiles(shape, rescale: float, config) -> int:
    size = [max(1, round(n * rescale)) for n in shape]
    padded = [n + sum(p) for n, p in zip(size, pad_widths(size, bsize=config.bsize))]
    return make_tile_grid(padded, bsize=config.bsize, tile_overlap=config.tile_overlap).n_tiles


def _centre_window(shape, rescale: float, bsize: int) -> tuple[slice, slice]:
    """The centre window that the network sees as one tile at ``rescale``."""
    side = max(16, int((bsize - 16) / rescale))  # run_tiled pads bsize - 16 to one tile
    out = []
    for n in shape:
        size = min(n, side)
        start = (n - size) // 2
        out.append(slice(start, start + size))
    return tuple(out)


def _window_diameters(masks: np.ndarray, window, shape) -> tuple[np.ndarray, np.ndarray]:
    """Diameters and edge-correction weights of the masks inside ``window`` of ``shape``.

    Masks that touch a cut edge (a window edge inside the image) get weight 0; each other mask
    is weighted by ``1 / (Wy - hy + 1)`` and ``1 / (Wx - hx + 1)`` along the cut axes (its
    bounding box ``hy`` x ``hx``, the window ``Wy`` x ``Wx``): the inverse number of window
    positions that hold it whole.
    """
    ids, areas = np.unique(masks[masks > 0], return_counts=True)
    boxes = ndimage.find_objects(masks)
    weights = np.ones(ids.size)
    for k, label in enumerate(ids):
        for axis, (win, box) in enumerate(zip(window, boxes[label - 1])):
            cut_low, cut_high = win.start > 0, win.stop < shape[axis]
            size = win.stop - win.start
            if (cut_low and box.start == 0) or (cut_high and box.stop == size):
                weights[k] = 0.0
            elif cut_low or cut_high:
                weights[k] /= size - (box.stop - box.start) + 1
    return 2.0 * np.sqrt(areas / np.pi), weights


def _weighted_median(diams: np.ndarray, weights: np.ndarray) -> float:
    if diams.size == 0:
        return 0.0
    if weights.sum() <= 0:
        return float(np.median(diams))
    order = np.argsort(diams)
    cum = np.cumsum(weights[order])
    return float(diams[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _interior_median(masks: np.ndarray, window, shape) -> float:
    """Edge-corrected median diameter of the masks inside one ``window`` (see above)."""
    return _weighted_median(*_window_diameters(masks, window, shape))


def estimate_and_segment(model, x: np.ndarray, config):
    """Estimate the diameter of prepared input ``x``; return ``(diameter, segmentation)``.

    ``segmentation`` is the finished whole-image result at ``diameter`` when a refinement step
    produced it (see the module notes), else None (the caller segments at ``diameter``).
    ``model`` is a :class:`~cp2_engine.inference.Model` with a size model.
    """
    from cp2_engine.metrics import diameters

    first = _style_diameter(model, x, config)
    shape = x.shape[1:]
    steps = _Steps()

    def measure(d: float) -> float:
        rescale = model.diam_mean / d
        likely_last = steps.gap is None or steps.gap < 2 * CLOSE
        if likely_last and _n_tiles(shape, rescale, config) <= WHOLE_TILES:
            seg = model._segment_prepared(x, config, d, _Timer())
            steps.whole[d] = seg
            steps.gap = _gap(diameters(seg.masks)[0], d)
            return diameters(seg.masks)[0]
        window = _centre_window(shape, rescale, config.bsize)
        seg = model._segment_prepared(x[(slice(None), *window)], config, d, _Timer())
        measured = _interior_median(seg.masks, window, shape)
        steps.gap = _gap(measured, d)
        return measured

    est = refine_diameter(
        measure, first=first, fallback=model._default_diameter(), close_enough=CLOSE
    )
    logger.info("diameter estimate: style %.1f px, refined %.1f px", first, est.diameter)
    if est.used in steps.whole and est.disagreement < CLOSE:
        return est.used, steps.whole[est.used]
    return est.diameter, None
