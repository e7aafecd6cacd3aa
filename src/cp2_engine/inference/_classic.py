"""A classical (non-learned) segmenter: smoothing, Otsu threshold and distance-transform watershed.

It has the same ``segment(image, *, diameter, channels)`` interface as
:class:`cp2_engine.inference.Model`, so it can stand in wherever a segmenter is expected. It is a
baseline for comparisons and a fast, deterministic segmenter for testing block-wise processing of
large images; it is not a substitute for a trained network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed


@dataclass(frozen=True)
class ClassicResult:
    """Result of :meth:`ClassicSegmenter.segment` (masks only)."""

    masks: np.ndarray
    diameter: float


@dataclass(frozen=True)
class ClassicSegmenter:
    """Otsu threshold + distance-transform watershed, with seeds spaced by the cell diameter.

    Parameters
    ----------
    threshold : float, optional
        Fixed foreground threshold on the smoothed image. ``None`` uses Otsu's threshold of the
        image passed to :meth:`segment`; give a fixed value when segmenting blocks of one large
        image, so that every block uses the same threshold.
    min_size : int
        Objects with fewer pixels are removed.

    Examples
    --------
    >>> from cp2_engine.synthetic import disks
    >>> sample = disks((64, 64), n_disks=3, radius=6, seed=0)
    >>> int(ClassicSegmenter().segment(sample.image, diameter=12).masks.max())
    3
    """

    threshold: float | None = None
    min_size: int = 15

    def segment(self, image, *, diameter=30.0, channels=(0, 0), **_ignored) -> ClassicResult:
        """Segment a 2D image (or the mean of its channels) into labelled objects."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 3:
            img = img.mean(axis=-1)
        if img.ndim != 2:
            raise ValueError(f"expected a 2D image (H, W) or (H, W, C), got shape {image.shape}")
        smooth = ndi.gaussian_filter(img, 1.0)
        thr = self.threshold
        if thr is None:
            thr = threshold_otsu(smooth) if np.ptp(smooth) > 0 else np.inf
        fg = smooth > thr
        dist = ndi.distance_transform_edt(fg)
        spacing = max(int(diameter * 0.4), 1)
        peaks = peak_local_max(dist, min_distance=spacing, labels=ndi.label(fg)[0])
        markers = np.zeros(img.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = watershed(-dist, markers, mask=fg)
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < self.min_size] = 0
        present = np.flatnonzero(sizes >= self.min_size)
        lut = np.zeros(len(sizes), dtype=np.uint32)
        lut[present[present > 0]] = np.arange(1, int((present > 0).sum()) + 1)
        return ClassicResult(lut[labels], float(diameter))
