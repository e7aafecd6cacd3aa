"""Cost-aware active choice: rank images by expected accuracy gain per expected human ROI.

The uncertainty ranking of :mod:`cp2_engine.hitl._active` picks the image the model is least
sure of, which is often the one where it misses most cells, so the human draws the most ROIs
there. Here each candidate image gets an *expected cost* and an *expected gain* from two
segmentations by the current model (the image, and the image flipped along both axes and flipped
back), and the ranking is by ``gain / cost``:

cost (expected human ROIs)
    ``1 + expected_fixed + expected_missed``: a mask whose flip-consistency IoU (IoU with its
    one-to-one match in the flipped segmentation) is below ``keep_iou``, or that has no match,
    is expected to be fixed; a mask found only in the flipped segmentation, and foreground
    (cell probability above the threshold) that no mask covers, divided by the median mask
    area, are expected misses. The 1 is the review of the image itself.
gain (expected accuracy gain)
    ``uncertainty * (n_masks + expected_missed)``: the number of ROIs the image adds to the
    training set, weighted by how unsure the model is on it (the mean of the ``flow``,
    ``boundary`` and ``flips`` signals of :mod:`~cp2_engine.hitl._active`, each in [0, 1]).

So an image full of ROIs the model gets nearly right (many free labels, a little uncertainty)
ranks above one where the model misses most cells (informative, but every ROI is drawn by hand).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cp2_engine.hitl._active import RankProgress, _boundary_signal, _flow_signal, _spatial_axes
from cp2_engine.hitl._annotator import KEEP_IOU
from cp2_engine.util import drain

__all__ = ["CostMixin", "CostScore", "iter_rank_by_cost", "rank_by_cost"]


@dataclass(frozen=True)
class CostScore:
    """One image's expected gain, expected human ROIs (cost) and their ratio (``score``)."""

    name: str
    score: float
    gain: float
    cost: float
    uncertainty: float
    n_masks: int
    expected_fixed: int
    expected_missed: int

    @property
    def reason(self) -> str:
        """A human-readable summary."""
        return (f"{self.n_masks} masks; ~{self.expected_fixed} to fix and "
                f"~{self.expected_missed} missed (cost {self.cost:.0f} ROIs); uncertainty "
                f"{self.uncertainty:.2f}; gain/cost {self.score:.2f}")  # fmt: skip

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"name": self.name, "score": round(self.score, 4), "gain": round(self.gain, 3),
                "cost": round(self.cost, 2), "uncertainty": round(self.uncertainty, 4),
                "n_masks": self.n_masks, "expected_fixed": self.expected_fixed,
                "expected_missed": self.expected_missed, "reason": self.reason}  # fmt: skip


def _expected_counts(masks, back, cellprob, threshold: float, keep_iou: float) -> tuple[int, int]:
    """(expected fixed, expected missed) from the masks and the flipped-back masks."""
    from cp2_engine.metrics import match_masks

    n = len(np.unique(masks[masks > 0]))
    m = match_masks(masks, back, threshold=0.5)
    fixed = int(np.sum(m.ious < keep_iou)) + (n - m.tp)
    missed = m.n_pred - m.tp
    areas = np.bincount(masks.ravel())[1:]
    areas = areas[areas > 0]
    if len(areas):
        uncovered = int(np.count_nonzero((cellprob > threshold) & (masks == 0)))
        missed += int(uncovered // max(1.0, float(np.median(areas))))
    return fixed, missed


def _score(segmenter, name: str, image: np.ndarray, kwargs: dict, keep_iou: float, threshold):
    seg = segmenter.segment(image, **kwargs)
    masks = np.asarray(seg.masks)
    axes = _spatial_axes(image)
    flipped = segmenter.segment(np.flip(image, axis=axes).copy(), **kwargs).masks
    back = np.ascontiguousarray(np.flip(np.asarray(flipped), axis=(0, 1)))
    cellprob = np.asarray(seg.cellprob)
    fixed, missed = _expected_counts(masks, back, cellprob, threshold, keep_iou)
    from cp2_engine.metrics import match_masks

    flips = 0.0 if not masks.any() and not back.any() else 1.0 - match_masks(masks, back).f1
    flow = _flow_signal(masks, np.asarray(seg.flows))[0]
    uncertainty = float(np.mean([flow, _boundary_signal(cellprob, threshold), flips]))
    n = len(np.unique(masks[masks > 0]))
    gain = uncertainty * (n + missed)
    cost = 1.0 + fixed + missed
    return CostScore(name, gain / cost, gain, cost, uncertainty, n, fixed, missed)


def iter_rank_by_cost(
    segmenter,
    images: Mapping[str, Any],
    *,
    diameter: float | None = None,
    keep_iou: float = KEEP_IOU,
    **segment_kwargs: Any,
) -> Generator[RankProgress, None, list[CostScore]]:
    """Rank ``images`` by expected accuracy gain per expected human ROI, best first.

    Parameters
    ----------
    segmenter : Segmenter
        The current model.
    images : mapping of str to ndarray
        The candidate (unannotated) 2-D images by name.
    diameter : float, optional
        Cell diameter for the segmentations.
    keep_iou : float
        The annotator's keep threshold (a mask less consistent than this is expected fixed).
    **segment_kwargs
        Passed to ``segment`` (e.g. ``cellprob_threshold``).

    Yields
    ------
    RankProgress

    Returns
    -------
    list of CostScore
        Highest ``gain / cost`` first; ties keep the order of ``images``.
    """
    kwargs = {**segment_kwargs, "diameter": diameter}
    threshold = float(segment_kwargs.get("cellprob_threshold", 0.0))
    names = list(images)
    scores = []
    for i, name in enumerate(names):
        yield RankProgress.of(i, len(names), name)
        image = np.asarray(images[name])
        scores.append(_score(segmenter, name, image, kwargs, keep_iou, threshold))
    yield RankProgress.of(len(names), len(names), "")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].score, i))
    return [scores[i] for i in order]


def rank_by_cost(segmenter, images: Mapping[str, Any], **kwargs: Any) -> list[CostScore]:
    """:func:`iter_rank_by_cost` run to the end.

    Examples
    --------
    >>> from cp2_engine.inference import Model
    >>> from cp2_engine.synthetic import touching_cells
    >>> img = touching_cells((64, 64), diameter=16, seed=1).image
    >>> ranking = rank_by_cost(Model.random(seed=0), {"a": img, "b": img[::-1]}, diameter=16)
    >>> sorted(r.name for r in ranking), all(r.cost >= 1 for r in ranking)
    (['a', 'b'], True)
    """
    return drain(iter_rank_by_cost(segmenter, images, **kwargs))


class CostMixin:
    """:meth:`rank_next_by_cost` of :class:`HitlProject` (read-only)."""

    def rank_next_by_cost(self, **kwargs: Any) -> list[CostScore]:
        """The unaccepted 2-D images ranked by expected gain per expected human ROI, best first
        (:func:`iter_rank_by_cost` with the current model and the project's diameter; e.g.
        ``keep_iou=0.75``). ``next_image("cost")`` is the first of them."""
        if any(entry.get("stack") for entry in self._meta["images"]):
            raise ValueError("the cost-aware choice ranks 2-D images; this project holds "
                             "z-stacks: use next_image('order')")  # fmt: skip
        pending = {n: self.image(n) for n in self.names if not self.is_accepted(n)}
        kwargs.setdefault("diameter", self.diameter)
        return drain(iter_rank_by_cost(self.load_model(), pending, **kwargs))
