"""The result of :meth:`Model.segment <cp2_engine.inference.Model.segment>`
(:class:`Segmentation`), its Cellpose ``_seg.npy`` writer and the per-stage timer of a run."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from cp2_engine.inference._config import SegmentConfig

__all__ = ["Segmentation", "save_segmentation_npy"]


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


def save_segmentation_npy(path, segmentation, *, image, model_path=None, overwrite=False):
    """Write a segmentation as a Cellpose-GUI ``_seg.npy`` (the one writer of a segmentation's
    masks, flows, diameter, channels and thresholds; :func:`cp2_engine.io.save_seg_npy`).

    Parameters
    ----------
    path : str or os.PathLike
        The ``_seg.npy`` path (or the image path, as for :func:`cp2_engine.io.save_seg_npy`).
    segmentation : Segmentation
        A :meth:`Model.segment` result (or any object with its ``masks``, ``flows``,
        ``cellprob``, ``diameter`` and ``config``, such as a zoo segmentation).
    image : numpy.ndarray
        The image that was segmented.
    model_path, overwrite
        The model's name or file (stored for the GUI), and whether to replace an existing file
        (default False), as for :func:`cp2_engine.io.save_seg_npy`.

    Returns
    -------
    pathlib.Path
        Where it was written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cp2_engine.io import load_seg_npy
    >>> m = np.zeros((8, 8), np.uint16); m[2:5, 2:5] = 1
    >>> zeros = np.zeros((3, 8, 8), np.float32)
    >>> seg = Segmentation(m, zeros[:2], zeros[2], np.zeros(256, np.float32), 9.0, 1.0, 200,
    ...                    SegmentConfig(channels=(2, 1)))
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cells_seg.npy"
    >>> d = load_seg_npy(save_segmentation_npy(out, seg, image=np.zeros((8, 8)), model_path="m"))
    >>> list(d["chan_choose"]), float(d["diameter"]), d["model_path"]
    ([2, 1], 9.0, 'm')
    """
    from cp2_engine.io import save_seg_npy

    seg, config = segmentation, segmentation.config
    return save_seg_npy(path, image=image, masks=seg.masks, flows=seg.flows, cellprob=seg.cellprob,
                        diameter=seg.diameter, channels=config.channels, model_path=model_path,
                        flow_threshold=config.flow_threshold, overwrite=overwrite,
                        cellprob_threshold=config.cellprob_threshold)  # fmt: skip


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
