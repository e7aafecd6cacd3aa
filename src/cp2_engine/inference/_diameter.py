"""The diameter estimate: size model first, then masks re-measured until they agree.

The size model maps an image's style to a first diameter ``d0``. Style alone can be far off on
images unlike the model's training set (2x on synthetic fluorescent cells, 3x on stained tissue),
and one re-measurement at ``d0`` does not recover from that: a network run at a scale twice
too small merges neighbours, and their masks measure even larger. So the estimate iterates a
fixed point instead: segment at ``d``, measure the masks' median diameter ``m(d)`` (in original
pixels), continue from ``m(d)`` while it moves. It starts from the size model's ``d0``; when that
chain does not converge, it also starts from the model's training diameter, and keeps the
diameter whose masks agree best with the scale they were segmented at (smallest
``|log(m(d) / d)|``): a self-consistent segmentation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DiameterEstimate", "refine_diameter"]

logger = logging.getLogger(__name__)

#: Stop iterating once the masks measure within this relative distance of the diameter used.
CONVERGED = 0.05
#: At most this many segmentations per start.
MAX_STEPS = 4
#: Starts closer than this (relative) are run once.
SAME_START = 0.1
#: Warn when the best estimate still disagrees with its masks by more than this (log ratio).
DISAGREE = 0.25


@dataclass(frozen=True)
class DiameterEstimate:
    """Result of :func:`refine_diameter`.

    Attributes
    ----------
    diameter : float
        The estimate (pixels of the original image).
    first : float
        The first guess of the start the estimate came from.
    steps : tuple of (float, float)
        Every (diameter segmented at, median mask diameter measured) pair tried.
    disagreement : float
        ``|log(measured / used)|`` of the chosen step (0 = the masks agree exactly).
    used : float
        The diameter the chosen step was segmented at (``diameter`` is what its masks measured).
    """

    diameter: float
    first: float
    steps: tuple[tuple[float, float], ...]
    disagreement: float
    used: float = math.nan


def _starts(first: float, fallback: float) -> list[float]:
    starts = [first]
    if abs(math.log(fallback / first)) > SAME_START:
        starts.append(fallback)
    return starts


def refine_diameter(
    measure: Callable[[float], float],
    *,
    first: float,
    fallback: float,
    close_enough: float = CONVERGED,
) -> DiameterEstimate:
    """Iterate ``d -> measure(d)`` from ``first`` and ``fallback``; keep the most consistent.

    A chain stops at the first step whose masks measure within ``close_enough`` (relative,
    as ``|log(measured / d)|``) of the diameter ``d`` they were segmented at.

    Parameters
    ----------
    measure : callable
        ``measure(d)`` segments at diameter ``d`` and returns the median diameter of the masks
        (0 when there are none).
    first : float
        The size model's estimate.
    fallback : float
        A second start (the model's training diameter), tried when the first chain ends
        without a step within ``close_enough``.
    close_enough : float
        Stop tolerance (default :data:`CONVERGED`, 5 %).

    Examples
    --------
    A segmenter whose masks measure 20 px whatever the scale, except that far too small
    scales merge cells (masks twice the scale):

    >>> est = refine_diameter(lambda d: 20.0 if d < 35 else 2 * d, first=50.0, fallback=30.0)
    >>> round(est.diameter, 1), est.first
    (20.0, 30.0)
    """
    best: tuple[float, float, float, float] | None = None  # (gap, measured, start, used)
    steps: list[tuple[float, float]] = []
    for start in _starts(first, fallback):
        if best is not None and best[0] < close_enough:  # the size model's chain converged
            break
        d = start
        for _ in range(MAX_STEPS):
            measured = float(measure(d))
            steps.append((d, measured))
            if measured <= 0:
                break
            gap = abs(math.log(measured / d))
            if best is None or gap < best[0]:
                best = (gap, measured, start, d)
            if gap < close_enough:
                break
            d = measured
    if best is None:  # no masks at any scale: keep the size model's guess
        return DiameterEstimate(first, first, tuple(steps), math.inf)
    gap, diameter, start, used = best
    if gap > DISAGREE:
        logger.warning(
            "diameter estimate %.1f px disagrees with its own masks (log ratio %.2f); "
            "pass the diameter if the masks look wrong",
            diameter,
            gap,
        )
    return DiameterEstimate(diameter, start, tuple(steps), gap, used)
