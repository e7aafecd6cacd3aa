"""The one interface every trained segmenter implements: :class:`Segmenter`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from cp2_engine.inference._transforms import check_image
from cp2_engine.util import ProgressEvent

__all__ = ["SegmentProgress", "Segmenter", "iter_segment_many"]


@dataclass(frozen=True)
class SegmentProgress(ProgressEvent):
    """One step of :meth:`Segmenter.segment_many`: ``done`` of ``total`` images are segmented;
    ``segmentation`` is the last one's."""

    tick: ClassVar[bool] = True

    segmentation: Any


@runtime_checkable
class Segmenter(Protocol):
    """What the CLI, the napari plugin and the pipelines need from a model.

    :class:`~cp2_engine.inference.Model` (one network) and :class:`~cp2_engine.zoo.ZooModel`
    (a zoo that routes each image to a specialist) both implement it fully;
    :func:`cp2_engine.segmenters.load_segmenter` returns one from a model key.

    Examples
    --------
    >>> from cp2_engine.inference import Model
    >>> isinstance(Model.random(seed=0), Segmenter)
    True
    """

    name: str

    def segment(self, image, *, diameter=None, channels=None, config=None, **overrides) -> Any:
        """Segment one image; the result has ``masks``, ``flows``, ``cellprob``, ``style``."""

    def recompute_masks(self, seg, *, flow_threshold=None, cellprob_threshold=None,
                        min_size=None) -> Any:  # fmt: skip
        """Masks of an earlier result with new thresholds, without running the network."""

    def estimate_diameter(self, image, *, channels=None, config=None, **overrides) -> float:
        """Cell diameter (pixels) of an image, from the size model."""

    def style(self, image, *, channels=None, config=None, **overrides) -> np.ndarray:
        """The image's 256-d unit-length style vector."""

    def segment_many(self, images: Iterable, *, config=None, **overrides) -> Iterator[Any]:
        """Segment several images (arrays or paths), yielding progress after each."""


def iter_segment_many(segmenter, images: Iterable, *, config=None, **overrides) -> Iterator:
    """The shared body of ``segment_many``: yields ``SegmentProgress`` after each image.

    Examples
    --------
    >>> from cp2_engine.inference import Model
    >>> steps = iter_segment_many(Model.random(seed=0), [np.ones((16, 16))] * 2, diameter=30)
    >>> [(p.done, p.total, p.message) for p in steps]
    [(1, 2, 'image 1/2 segmented'), (2, 2, 'image 2/2 segmented')]
    """
    from cp2_engine.io import imread

    items = list(images)
    for k, item in enumerate(items):
        if isinstance(item, str | os.PathLike):
            item = imread(Path(item))
        seg = segmenter.segment(check_image(item), config=config, **overrides)
        text = f"image {k + 1}/{len(items)} segmented"
        yield SegmentProgress(seg, done=k + 1, total=len(items), message=text)
