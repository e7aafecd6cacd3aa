"""Route an image to a zoo specialist by a k-nearest-neighbour vote over training styles."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cp2_engine.inference import iter_segment_many
from cp2_engine.zoo._clustering import check_styles

log = logging.getLogger(__name__)

__all__ = ["RouteDecision", "StyleRouter", "ZooModel", "ZooSegmentation"]


@dataclass(frozen=True)
class RouteDecision:
    """Which specialist an image goes to, and why.

    Attributes
    ----------
    cluster : int
        The chosen cluster (majority of the neighbours; ties go to the nearest one).
    model_name : str
        Name of that cluster's specialist.
    votes : tuple of (int, float)
        ``(cluster, distance)`` of each nearest training style, nearest first.
    """

    cluster: int
    model_name: str
    votes: tuple[tuple[int, float], ...]

    @property
    def vote_counts(self) -> dict[int, int]:
        """Number of neighbours per cluster."""
        return dict(Counter(c for c, _ in self.votes))

    @property
    def reason(self) -> str:
        """One line saying why this cluster was chosen."""
        n_for = self.vote_counts.get(self.cluster, 0)
        return (
            f"{n_for}/{len(self.votes)} nearest training styles are in cluster {self.cluster} "
            f"(votes {self.vote_counts}, nearest distance {self.votes[0][1]:.3f})"
        )


@dataclass(frozen=True, eq=False)
class StyleRouter:
    """A k-NN classifier from style vectors to zoo clusters.

    Build it with :meth:`fit`. ``n_neighbors`` is clamped to the number of training styles.

    Examples
    --------
    >>> s = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> router = StyleRouter.fit(s, [0, 0, 1, 1], n_neighbors=3)
    >>> router.route(np.array([0.95, 0.05])).cluster
    0
    """

    train_styles: np.ndarray
    labels: np.ndarray
    model_names: dict[int, str]
    n_neighbors: int = 5
    _knn: object = field(default=None, repr=False)

    @classmethod
    def fit(cls, styles, labels, *, model_names=None, n_neighbors: int = 5) -> StyleRouter:
        """Fit a router on training styles and their cluster labels.

        Parameters
        ----------
        styles : array_like
            ``(N, D)`` training style vectors.
        labels : array_like
            ``(N,)`` integer cluster ids.
        model_names : dict, optional
            Cluster id -> specialist name; default ``"cluster<id>"``.
        n_neighbors : int
            Neighbours in the vote (5 as in Cellpose), clamped to N.

        Returns
        -------
        StyleRouter

        Examples
        --------
        >>> StyleRouter.fit(np.eye(3), [0, 1, 2]).n_neighbors
        3
        """
        from sklearn.neighbors import NearestNeighbors

        arr = check_styles(styles)
        lab = np.asarray(labels)
        if lab.shape != (arr.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"expected {arr.shape[0]} integer labels, got {lab.dtype} {lab.shape}"
            )
        if n_neighbors < 1:
            raise ValueError(f"expected n_neighbors >= 1, got {n_neighbors}")
        names = {int(c): f"cluster{int(c)}" for c in np.unique(lab)}
        names.update({int(k): str(v) for k, v in (model_names or {}).items()})
        k = min(int(n_neighbors), arr.shape[0])
        knn = NearestNeighbors(n_neighbors=k).fit(arr)
        return cls(arr, lab.astype(np.int64), names, k, knn)

    def route(self, style) -> RouteDecision:
        """Route one style vector ``(D,)``; see :meth:`route_batch`.

        Examples
        --------
        >>> router = StyleRouter.fit(np.eye(2), [0, 1], n_neighbors=1)
        >>> router.route(np.array([0.0, 1.0])).model_name
        'cluster1'
        """
        arr = np.asarray(style, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"expected one style of shape (D,), got shape {arr.shape}")
        return self.route_batch(arr[None])[0]

    def route_batch(self, styles) -> list[RouteDecision]:
        """Route ``(M, D)`` style vectors to clusters by a majority vote of their neighbours.

        Parameters
        ----------
        styles : array_like
            Query styles with the training styles' width D.

        Returns
        -------
        list of RouteDecision

        Examples
        --------
        >>> router = StyleRouter.fit(np.eye(2), [0, 1], n_neighbors=1)
        >>> [d.cluster for d in router.route_batch(np.eye(2)[::-1])]
        [1, 0]
        """
        arr = check_styles(styles)
        if arr.shape[1] != self.train_styles.shape[1]:
            raise ValueError(
                f"expected styles of width {self.train_styles.shape[1]}, got {arr.shape[1]}"
            )
        dist, idx = self._knn.kneighbors(arr)
        return [self._decide(self.labels[i], d) for i, d in zip(idx, dist)]

    def _decide(self, neighbour_labels: np.ndarray, dist: np.ndarray) -> RouteDecision:
        counts = np.bincount(neighbour_labels)
        winners = np.flatnonzero(counts == counts.max())
        # tie: the tied cluster holding the nearest neighbour wins
        cluster = int(next(c for c in neighbour_labels if c in winners))
        votes = tuple((int(c), float(d)) for c, d in zip(neighbour_labels, dist))
        return RouteDecision(cluster, self.model_names[cluster], votes)


@dataclass(frozen=True, eq=False)
class ZooSegmentation:
    """A specialist's :class:`~cp2_engine.inference.Segmentation` plus the routing decision.

    ``masks``, ``flows``, ``cellprob``, ``style`` and ``diameter`` read through to the
    segmentation, so it can stand in for a ``Segmentation``.
    """

    segmentation: object
    route: RouteDecision

    def __getattr__(self, name: str):
        if name in ("segmentation", "route") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.segmentation, name)


class ZooModel:
    """Segment each image with the specialist of its style cluster.

    The style of an image comes from the zoo's style model (the net the zoo was clustered
    with), at the given diameter (None: no resizing, as Cellpose's GUI uses the entered
    diameter); a 5-NN vote over the training styles picks the cluster. Specialists load lazily
    and are cached.

    Parameters
    ----------
    zoo : Zoo
        A loaded zoo (:func:`~cp2_engine.zoo.load_zoo`).
    device : str
        Device of every model.

    Examples
    --------
    >>> model = ZooModel.load("path/to/zoo")  # doctest: +SKIP
    >>> result = model.segment(image, diameter=17)  # doctest: +SKIP
    >>> result.route.model_name, result.route.reason, result.masks.max()  # doctest: +SKIP
    """

    def __init__(self, zoo, *, device="auto") -> None:
        from cp2_engine.inference import Model

        manifest = zoo.manifest
        if not manifest.clusters:
            raise ValueError(f"zoo {zoo.folder} has no clusters")
        style_path = manifest.style_model or manifest.generalist
        if style_path is None:
            raise ValueError(f"zoo {zoo.folder} names neither a style model nor a generalist")
        self.zoo = zoo
        self.device = device
        self.name = f"zoo:{zoo.folder}"
        self.style_model = Model.load(zoo.folder / style_path, device=device)
        names = {c.id: c.name for c in manifest.clusters}
        self.router = StyleRouter.fit(zoo.styles, zoo.labels, model_names=names)
        self._specialists: dict[int, object] = {}

    @classmethod
    def load(cls, folder, *, device="auto") -> ZooModel:
        """Load a zoo folder (``"zoo:"`` prefix allowed), checking every model file exists.

        Examples
        --------
        >>> ZooModel.load("zoo:path/to/zoo")  # doctest: +SKIP
        """
        from cp2_engine.zoo._store import load_zoo

        text = str(folder)
        return cls(load_zoo(text.removeprefix("zoo:")), device=device)

    def specialist(self, cluster: int):
        """The (cached) :class:`~cp2_engine.inference.Model` of one cluster."""
        from cp2_engine.inference import Model

        if cluster not in self._specialists:
            path = self.zoo.model_path(cluster)
            self._specialists[cluster] = Model.load(path, device=self.device)
        return self._specialists[cluster]

    def route(self, image, *, diameter=None, channels=(0, 0)) -> RouteDecision:
        """Route one image to a cluster (see the class notes on ``diameter``).

        Examples
        --------
        >>> ZooModel.load("zoo").route(image, diameter=30).reason  # doctest: +SKIP
        """
        from cp2_engine.zoo._styles import compute_styles

        style = compute_styles(
            self.style_model,
            [image],
            diameters=diameter,
            diam_mean=self.zoo.manifest.diam_mean,
            channels=channels,
        )[0]
        decision = self.router.route(style)
        log.info("routed to %s: %s", decision.model_name, decision.reason)
        return decision

    def segment(
        self, image, *, diameter=None, channels=(0, 0), config=None, **overrides
    ) -> ZooSegmentation:
        """Route ``image`` and segment it with that cluster's specialist.

        Parameters
        ----------
        image : array_like
            One 2-D image.
        diameter : float, optional
            Object diameter in pixels, used for routing and passed to the specialist (None:
            the specialist's own default).
        channels : (int, int)
            Cellpose channels.
        config : SegmentConfig, optional
            Passed to the specialist's ``segment`` with ``overrides``.
        **overrides
            ``SegmentConfig`` fields.

        Returns
        -------
        ZooSegmentation

        Examples
        --------
        >>> ZooModel.load("zoo").segment(image, diameter=30).route.cluster  # doctest: +SKIP
        """
        decision = self.route(image, diameter=diameter, channels=channels)
        seg = self.specialist(decision.cluster).segment(
            image, diameter=diameter, channels=channels, config=config, **overrides
        )
        return ZooSegmentation(seg, decision)

    def recompute_masks(self, seg, **thresholds) -> ZooSegmentation:
        """Recompute masks from the cached flows of ``seg`` with the specialist that made them.

        ``thresholds`` are those of :meth:`~cp2_engine.inference.Model.recompute_masks`
        (``flow_threshold``, ``cellprob_threshold``, ``min_size``); no network runs.
        """
        if not isinstance(seg, ZooSegmentation):
            raise TypeError(
                f"seg must be a ZooSegmentation made by this zoo, got {type(seg).__name__}"
            )
        specialist = self.specialist(seg.route.cluster)
        new = specialist.recompute_masks(seg.segmentation, **thresholds)
        return ZooSegmentation(new, seg.route)

    def estimate_diameter(self, image, *, channels=(0, 0), config=None, **overrides) -> float:
        """Estimate the cell diameter with the size model of the specialist the image routes to.

        The image is routed at its own scale (no diameter yet), as :meth:`segment` does when
        no diameter is given.

        Raises
        ------
        ValueError
            If that specialist has no size model.
        """
        decision = self.route(image, diameter=None, channels=channels)
        return self.specialist(decision.cluster).estimate_diameter(
            image, channels=channels, config=config, **overrides
        )

    def style(self, image, *, channels=(0, 0), config=None, **overrides) -> np.ndarray:
        """The image's style vector from the zoo's style model (the one routing uses)."""
        return self.style_model.style(image, channels=channels, config=config, **overrides)

    def segment_many(self, images, *, config=None, **overrides):
        """Route and segment several images (arrays or paths), yielding progress after each.

        Yields :class:`~cp2_engine.inference.SegmentProgress` whose ``segmentation`` is a
        :class:`ZooSegmentation`.
        """
        return iter_segment_many(self, images, config=config, **overrides)
