"""Route an image to a zoo specialist by a k-nearest-neighbour vote over training styles."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cp2_engine.zoo.clustering import check_styles

log = logging.getLogger(__name__)

__all__ = ["RouteDecision", "StyleRouter"]


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
