"""Cluster style vectors: a kNN graph, Leiden communities and a t-SNE layout.

Every function here is pure and seeded: the same styles and seed give the same result.
The defaults (100 neighbours, resolution 0.45) are those of the Cellpose 2.0 paper's cytoplasm
zoo; the paper's nuclei zoo used 50 neighbours and resolution 0.25.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "check_styles",
    "cluster_styles",
    "knn_graph",
    "leiden_partition",
    "merge_small_clusters",
    "tsne_embedding",
]


def check_styles(styles, *, min_count: int = 1) -> np.ndarray:
    """Return ``styles`` as a finite float64 ``(N, D)`` array, or raise a clear error.

    Parameters
    ----------
    styles : array_like
        Style vectors, one per row.
    min_count : int
        The fewest rows accepted.

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float64 copy.

    Examples
    --------
    >>> check_styles([[1.0, 0.0], [0.0, 1.0]]).shape
    (2, 2)
    """
    arr = np.asarray(styles, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected styles of shape (N, D), got shape {arr.shape}")
    if arr.shape[0] < min_count:
        raise ValueError(f"expected at least {min_count} style vectors, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("styles contain NaN or infinite values")
    return arr


def knn_graph(styles, *, n_neighbors: int = 100):
    """Build the undirected k-nearest-neighbour graph of style vectors.

    Each style is joined to its ``n_neighbors`` nearest other styles (Euclidean distance,
    which ranks unit vectors like cosine distance); mutual neighbours share one edge.

    Parameters
    ----------
    styles : array_like
        ``(N, D)`` style vectors, N >= 2.
    n_neighbors : int
        Neighbours per style; clamped to N - 1 with a ``UserWarning`` when there are fewer
        styles.

    Returns
    -------
    igraph.Graph
        Undirected, simple graph with N vertices.

    Examples
    --------
    >>> g = knn_graph(np.eye(4), n_neighbors=1)
    >>> g.vcount()
    4
    """
    import igraph
    from sklearn.neighbors import NearestNeighbors

    arr = check_styles(styles, min_count=2)
    k = _clamp_neighbors(n_neighbors, arr.shape[0])
    nn = NearestNeighbors(n_neighbors=k + 1).fit(arr)
    idx = nn.kneighbors(arr, return_distance=False)
    src = np.repeat(np.arange(arr.shape[0]), k + 1)
    dst = idx.ravel()
    keep = src != dst
    edges = np.unique(np.sort(np.stack([src[keep], dst[keep]], axis=1), axis=1), axis=0)
    graph = igraph.Graph(n=arr.shape[0], edges=edges.tolist(), directed=False)
    return graph


def _clamp_neighbors(n_neighbors: int, n: int) -> int:
    if int(n_neighbors) < 1:
        raise ValueError(f"expected n_neighbors >= 1, got {n_neighbors}")
    if n_neighbors > n - 1:
        warnings.warn(
            f"n_neighbors={n_neighbors} but only {n} styles: using {n - 1} neighbours",
            UserWarning,
            stacklevel=3,
        )
        return n - 1
    return int(n_neighbors)


def leiden_partition(graph, *, resolution: float = 0.45, seed: int = 0) -> np.ndarray:
    """Partition a graph into communities with the seeded Leiden algorithm.

    Uses ``leidenalg.RBConfigurationVertexPartition`` (modularity with a resolution
    parameter). Higher resolutions give more, smaller clusters.

    Parameters
    ----------
    graph : igraph.Graph
        The kNN graph from :func:`knn_graph`.
    resolution : float
        Resolution parameter (> 0).
    seed : int
        Seed of Leiden's random node order.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 cluster ids, 0 = the largest cluster, consecutive.

    Examples
    --------
    >>> import igraph
    >>> g = igraph.Graph(n=6, edges=[(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5)])
    >>> leiden_partition(g, resolution=0.5, seed=0).tolist()
    [0, 0, 0, 1, 1, 1]
    """
    import leidenalg

    if not resolution > 0:
        raise ValueError(f"expected resolution > 0, got {resolution}")
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=float(resolution),
        seed=int(seed),
    )
    return _relabel_by_size(np.asarray(part.membership, dtype=np.int64))


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K-1 by decreasing size (ties: first appearance)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(uniq.size, dtype=np.int64)
    remap[order] = np.arange(uniq.size)
    return remap[np.searchsorted(uniq, labels)]


def merge_small_clusters(styles, labels, *, min_size: int = 2) -> np.ndarray:
    """Merge clusters smaller than ``min_size`` into the nearest larger cluster.

    A cluster's distance to another is the cosine distance between their mean styles. If no
    cluster reaches ``min_size``, everything becomes one cluster.

    Parameters
    ----------
    styles : array_like
        ``(N, D)`` style vectors.
    labels : array_like
        ``(N,)`` cluster ids.
    min_size : int
        Smallest cluster kept.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 ids, consecutive, 0 = largest.

    Examples
    --------
    >>> s = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [0.9, 0.2]])
    >>> merge_small_clusters(s, [0, 0, 1, 1, 2], min_size=2).tolist()
    [0, 0, 1, 1, 0]
    """
    arr = check_styles(styles)
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != (arr.shape[0],):
        raise ValueError(f"expected labels of shape ({arr.shape[0]},), got {lab.shape}")
    ids, counts = np.unique(lab, return_counts=True)
    big = ids[counts >= min_size]
    if big.size == 0:
        return np.zeros_like(lab)
    centres = np.stack([arr[lab == i].mean(axis=0) for i in ids])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) + 1e-12
    sim = centres @ centres[np.isin(ids, big)].T
    target = big[np.argmax(sim, axis=1)]
    target[np.isin(ids, big)] = ids[np.isin(ids, big)]
    merged = target[np.searchsorted(ids, lab)]
    if big.size < ids.size:
        log.info("merged %d clusters smaller than %d images", ids.size - big.size, min_size)
    return _relabel_by_size(merged)


def cluster_styles(
    styles, *, n_neighbors: int = 100, resolution: float = 0.45, seed: int = 0
) -> np.ndarray:
    """Cluster style vectors: kNN graph then Leiden.

    Parameters
    ----------
    styles : array_like
        ``(N, D)`` style vectors, N >= 2.
    n_neighbors : int
        Neighbours in the kNN graph (clamped to N - 1 with a warning).
    resolution : float
        Leiden resolution.
    seed : int
        Leiden seed.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 cluster ids, 0 = largest cluster.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = np.concatenate([rng.normal(0, 0.01, (10, 3)) + c for c in np.eye(3)])
    >>> np.unique(cluster_styles(s, n_neighbors=5, resolution=0.45)).size
    3
    """
    graph = knn_graph(styles, n_neighbors=n_neighbors)
    return leiden_partition(graph, resolution=resolution, seed=seed)


def tsne_embedding(styles, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Embed style vectors in 2-D with t-SNE (cosine metric) for plotting.

    Parameters
    ----------
    styles : array_like
        ``(N, D)`` style vectors, N >= 2.
    seed : int
        Random state of the embedding.
    perplexity : float
        Target perplexity, clamped to ``max(1, (N - 1) / 3)`` for small N.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64 coordinates.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tsne_embedding(rng.normal(size=(12, 4)), seed=0).shape
    (12, 2)
    """
    from sklearn.manifold import TSNE

    arr = check_styles(styles, min_count=2)
    perp = float(min(perplexity, max(1.0, (arr.shape[0] - 1) / 3.0)))
    perp = min(perp, arr.shape[0] - 1.0 - 1e-6)
    tsne = TSNE(n_components=2, metric="cosine", perplexity=perp, init="pca", random_state=seed)
    return tsne.fit_transform(arr).astype(np.float64)
