"""The result of :meth:`Model.segment <cp2_engine.inference.Model.segment>`
(:class:`Segmentation`) and the per-stage timer of a run."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from cp2_engine.inference._config import SegmentConfig

__all__ = ["Segmentation"]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :meth:`Model.segment` (all arrays at the original image size).

    Attributes
    ----------
    masks : numpy.ndarray
        ``(H, W)`` labels, 0 = background, uint16 (uint32 above 65535 masks).
    flows : numpy.ndarray
        float32 ``(2, H, W)`` predicted (dY, dX) in network units (5 x unit vectors).
    cellprob : numpy.ndarray
        float32 ``(H, W)`` cell-probability logits.
    style : numpy.ndarray
        float32 ``(256,)`` unit-length style vector of the image.
    diameter : float
        Diameter (pixels) the image was segmented at.
    rescale : float
        ``diam_mean / diameter``: factor the image was resized by for the network.
    niter : int
        Euler steps used for the masks (reused by :meth:`Model.recompute_masks`).
    config : SegmentConfig
        The settings of the run.
    timings : dict
        Seconds per stage (``prepare``, ``network``, ``resize``, ``masks``, ``total``; plus
        ``diameter`` when it was estimated).
    """

    masks: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    style: np.ndarray
    diameter: float
    rescale: float
    niter: int
    config: SegmentConfig
    timings: dict = field(default_factory=dict)

    @property
    def n_masks(self) -> int:
        """Number of masks."""
        return int(self.masks.max()) if self.masks.size else 0


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
