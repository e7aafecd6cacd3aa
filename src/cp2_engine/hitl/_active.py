"""Active choice of the next image: rank unannotated images by the current model's uncertainty.

Four simple signals, each mapped to ``[0, 1]`` (higher = the model is less sure), are computed
for every candidate image from the current model's own segmentation:

``flow``
    Mean over the model's masks of :func:`cp2_engine.postprocess.flow_error` (the mean squared
    difference between each mask's own heat-diffusion flows and the predicted flows ``dP / 5``),
    mapped by ``e / (e + FLOW_SCALE)`` (``FLOW_SCALE`` = 0.4, the default QC threshold, maps to
    0.5). An image where the model finds no cell at all scores 1 (it is assumed to hold cells).
``boundary``
    Cell-probability mass near the threshold: the fraction of candidate-foreground pixels
    (logit above ``threshold - 1``) whose logit lies within ``MARGIN`` (1) of the threshold.
``flips``
    Disagreement under a test-time flip: the image flipped along both axes is segmented, its
    masks are flipped back and matched to the unflipped masks at IoU 0.5; the signal is
    ``1 - F1`` (0 when the masks agree, and when both are empty).
``style``
    Distance to the images already accepted: ``(1 - max cosine similarity) / 2`` between the
    image's style vector and those of the accepted images (under the same model). Left out
    (None) when nothing is accepted yet.

The score is the weighted mean of the available signals (weights default to 1 each). The
ranking puts the highest score first and gives each image a human-readable reason naming its
signals, strongest first. Everything is read-only: ranking never writes the project.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cp2_engine.hitl._project_files import _spatial_shape
from cp2_engine.util import ProgressEvent, drain

__all__ = [
    "FLOW_SCALE",
    "MARGIN",
    "SIGNALS",
    "STRATEGIES",
    "ActiveMixin",
    "ImageScore",
    "RankProgress",
    "iter_rank_images",
    "rank_images",
]

#: Flow error that maps to 0.5 in the ``flow`` signal (the default flow-error QC threshold).
FLOW_SCALE = 0.4
#: Logit margin around the cell-probability threshold counted as uncertain.
MARGIN = 1.0
#: The signals, in the order they are reported.
SIGNALS = ("flow", "boundary", "flips", "style")
#: Strategies of :meth:`HitlProject.next_image` ("cost": :mod:`cp2_engine.hitl._cost`).
STRATEGIES = ("order", "active", "cost")


@dataclass(frozen=True)
class ImageScore:
    """One image's uncertainty under the current model (see the module docstring).

    ``signals`` maps each signal name to its ``[0, 1]`` value (``style`` is None when no image
    is accepted); ``flow_error`` is the raw mean flow error (NaN without masks).
    """

    name: str
    score: float
    signals: dict
    flow_error: float
    n_masks: int
    reason: str

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        flow = None if np.isnan(self.flow_error) else round(self.flow_error, 4)
        signals = {k: (None if v is None else round(v, 4)) for k, v in self.signals.items()}
        return {"name": self.name, "score": round(self.score, 4), "signals": signals,
                "flow_error": flow, "n_masks": self.n_masks, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class RankProgress(ProgressEvent):
    """Progress of a ranking: ``done`` of ``total`` images scored, ``name`` the one being scored
    now ("" when all are). Make one with :meth:`of`, which writes the message.

    Examples
    --------
    >>> RankProgress.of(1, 3, "img_b").message, RankProgress.of(3, 3, "").message
    ('scoring img_b (2/3)…', '3 images scored')
    """

    tick: ClassVar[bool] = True

    name: str

    @classmethod
    def of(cls, done: int, total: int, name: str) -> RankProgress:
        """The event before scoring ``name`` (after ``done`` images), or at the end (no name)."""
        text = f"scoring {name} ({done + 1}/{total})…" if name else f"{total} images scored"
        return cls(name, done=done, total=total, message=text)


def _spatial_axes(image: np.ndarray) -> tuple[int, int]:
    h, w = _spatial_shape(image.shape)
    if image.ndim == 3 and image.shape[1:] == (h, w) and image.shape[0] != h:
        return 1, 2
    return 0, 1


def _flow_signal(masks: np.ndarray, flows: np.ndarray) -> tuple[float, float]:
    from cp2_engine.postprocess import flow_error

    if not masks.any():
        return 1.0, float("nan")
    err = flow_error(masks, flows)
    mean = float(np.nanmean(err))
    return mean / (mean + FLOW_SCALE), mean


def _boundary_signal(cellprob: np.ndarray, threshold: float) -> float:
    candidate = cellprob > threshold - MARGIN
    n = int(candidate.sum())
    if n == 0:
        return 0.0
    near = np.abs(cellprob - threshold) < MARGIN
    return float((near & candidate).sum() / n)


def _flip_signal(segmenter, image: np.ndarray, masks: np.ndarray, kwargs: dict) -> float:
    from cp2_engine.metrics import match_masks

    axes = _spatial_axes(image)
    flipped = segmenter.segment(np.flip(image, axis=axes).copy(), **kwargs).masks
    back = np.flip(flipped, axis=(0, 1))
    if not masks.any() and not back.any():
        return 0.0
    return 1.0 - float(match_masks(masks, back, threshold=0.5).f1)


def _style_signal(style: np.ndarray, accepted: np.ndarray | None) -> float | None:
    if accepted is None or len(accepted) == 0:
        return None
    s = style / (np.linalg.norm(style) + 1e-12)
    a = accepted / (np.linalg.norm(accepted, axis=1, keepdims=True) + 1e-12)
    return float(np.clip((1.0 - float(np.max(a @ s))) / 2.0, 0.0, 1.0))


_PHRASES = {
    "flow": "mean flow error of its own masks {raw}",
    "boundary": "{pct} of foreground pixels near the cell-probability threshold",
    "flips": "{pct} of masks change under a flip",
    "style": "style distance {val:.2f} to the accepted images",
}


def _reason(signals: dict, flow_error: float, n_masks: int) -> str:
    present = sorted(((v, k) for k, v in signals.items() if v is not None), reverse=True)
    parts = []
    for value, key in present:
        if key == "flow" and np.isnan(flow_error):
            parts.append("no masks found (the model sees no cells)")
            continue
        raw = f"{flow_error:.2f}"
        parts.append(_PHRASES[key].format(raw=raw, pct=f"{100 * value:.0f}%", val=value))
    return f"{n_masks} masks; " + "; ".join(parts)


def _score_one(segmenter, name, image, accepted_styles, weights, kwargs, threshold) -> ImageScore:
    seg = segmenter.segment(image, **kwargs)
    masks = np.asarray(seg.masks)
    flow, raw = _flow_signal(masks, np.asarray(seg.flows))
    signals = {
        "flow": flow,
        "boundary": _boundary_signal(np.asarray(seg.cellprob), threshold),
        "flips": _flip_signal(segmenter, image, masks, kwargs),
        "style": _style_signal(np.asarray(seg.style, np.float64), accepted_styles),
    }
    used = [(weights[k], v) for k, v in signals.items() if v is not None and weights[k] > 0]
    total = sum(w for w, _ in used)
    score = sum(w * v for w, v in used) / total if total else 0.0
    n = len(np.unique(masks[masks > 0]))
    return ImageScore(name, float(score), signals, raw, n, _reason(signals, raw, n))


def _check_weights(weights: Mapping[str, float] | None) -> dict:
    out = dict.fromkeys(SIGNALS, 1.0)
    for key, value in (weights or {}).items():
        if key not in out:
            raise ValueError(f"unknown signal {key!r} in weights; expected some of {SIGNALS}")
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"weight of {key!r} must be a finite number >= 0, got {value!r}")
        out[key] = float(value)
    return out


def iter_rank_images(
    segmenter,
    images: Mapping[str, Any],
    *,
    accepted: Sequence[Any] = (),
    diameter: float | None = None,
    weights: Mapping[str, float] | None = None,
    **segment_kwargs: Any,
) -> Generator[RankProgress, None, list[ImageScore]]:
    """Rank ``images`` by the uncertainty of ``segmenter`` on them, most uncertain first.

    Parameters
    ----------
    segmenter : Segmenter
        The current model (``segment`` and ``style``; e.g. a ``Model``).
    images : mapping of str to ndarray
        The candidate (unannotated) images by name.
    accepted : sequence of ndarray
        The images already accepted (for the ``style`` signal; may be empty).
    diameter : float, optional
        Cell diameter for the segmentations (None = the model's default).
    weights : mapping, optional
        Weight of each signal (``flow``, ``boundary``, ``flips``, ``style``; default 1 each).
    **segment_kwargs
        Passed to ``segment`` (e.g. ``channels``, ``cellprob_threshold``).

    Yields
    ------
    RankProgress
        Before each image is scored, and once at the end.

    Returns
    -------
    list of ImageScore
        Highest score first; ties keep the order of ``images``.
    """
    weights = _check_weights(weights)
    kwargs = {**segment_kwargs, "diameter": diameter}
    threshold = float(segment_kwargs.get("cellprob_threshold", 0.0))
    names = list(images)
    styles = None
    if len(accepted) and weights["style"] > 0:
        styles = np.stack([np.asarray(segmenter.style(im, **kwargs), np.float64)
                           for im in accepted])  # fmt: skip
    scores = []
    for i, name in enumerate(names):
        yield RankProgress.of(i, len(names), name)
        image = np.asarray(images[name])
        scores.append(_score_one(segmenter, name, image, styles, weights, kwargs, threshold))
    yield RankProgress.of(len(names), len(names), "")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].score, i))
    return [scores[i] for i in order]


def rank_images(segmenter, images: Mapping[str, Any], **kwargs: Any) -> list[ImageScore]:
    """:func:`iter_rank_images` run to the end: the ranking, most uncertain first.

    Examples
    --------
    >>> from cp2_engine.inference import Model
    >>> from cp2_engine.synthetic import touching_cells
    >>> img = touching_cells((64, 64), diameter=16, seed=1).image
    >>> ranking = rank_images(Model.random(seed=0), {"a": img, "b": img[::-1]}, diameter=16)
    >>> sorted(r.name for r in ranking), 0.0 <= ranking[0].score <= 1.0
    (['a', 'b'], True)
    """
    return drain(iter_rank_images(segmenter, images, **kwargs))


class ActiveMixin:
    """:meth:`next_image` and :meth:`iter_rank_next` of :class:`HitlProject` (read-only)."""

    def next_image(self, strategy: str = "order") -> str | None:
        """The next image to annotate, or None when all are accepted.

        ``"order"``: the first image not accepted yet, in project order. ``"active"``: the
        unaccepted image the current model is least sure of (:meth:`rank_next`; this runs the
        model twice on every unaccepted image). ``"cost"``: the unaccepted image with the most
        expected accuracy gain per expected human ROI (:meth:`rank_next_by_cost`, also two runs
        per image). Reading only: no lock is taken.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from cp2_engine.hitl import HitlProject
        >>> p = HitlProject.create(Path(tempfile.mkdtemp()), images=[np.ones((8, 8))],
        ...                        initial_model="scratch")
        >>> p.next_image(), p.next_image("active")
        ('image_000', 'image_000')
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        pending = [n for n in self.names if not self.is_accepted(n)]
        if strategy == "order" or len(pending) <= 1:
            return pending[0] if pending else None
        if strategy == "cost":
            return self.rank_next_by_cost()[0].name  # CostMixin (_cost.py)
        return self.rank_next()[0].name

    def iter_rank_next(self, **kwargs: Any) -> Generator[RankProgress, None, list[ImageScore]]:
        """:func:`iter_rank_images` over the unaccepted images with the current model, the
        accepted images as style references and the project's diameter (2-D projects only)."""
        if any(entry.get("stack") for entry in self._meta["images"]):
            raise ValueError("the active choice ranks 2-D images; this project holds z-stacks: "
                             "use next_image('order')")  # fmt: skip
        pending = {n: self.image(n) for n in self.names if not self.is_accepted(n)}
        if not pending:
            return []
        accepted = [self.image(n) for n in self.accepted_names()]
        kwargs.setdefault("diameter", self.diameter)
        model = self.load_model()
        return (yield from iter_rank_images(model, pending, accepted=accepted, **kwargs))

    def rank_next(self, **kwargs: Any) -> list[ImageScore]:
        """The unaccepted images ranked by the current model's uncertainty (most uncertain
        first), each with its signals and a reason; see :func:`iter_rank_images`."""
        return drain(self.iter_rank_next(**kwargs))
