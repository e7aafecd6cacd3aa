"""Tests of cp2_engine.zoo._clustering: planted clusters, clamping, seeding, t-SNE."""

from __future__ import annotations

import igraph
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cp2_engine.zoo import cluster_styles, knn_graph, leiden_partition, tsne_embedding
from cp2_engine.zoo._clustering import check_styles, merge_small_clusters


def planted_styles(rng, *, n_clusters=5, per_cluster=60, dim=256, spread=0.15):
    """Gaussian blobs around random unit centres, projected back onto the unit sphere."""
    centres = rng.normal(size=(n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    styles = centres[truth] + rng.normal(scale=spread / np.sqrt(dim), size=(truth.size, dim))
    styles /= np.linalg.norm(styles, axis=1, keepdims=True)
    perm = rng.permutation(truth.size)
    return styles[perm], truth[perm]


def test_recovers_planted_clusters():
    styles, truth = planted_styles(np.random.default_rng(0))
    labels = cluster_styles(styles, n_neighbors=30, resolution=0.45, seed=0)
    assert adjusted_rand_score(truth, labels) > 0.9


def test_recovers_planted_clusters_with_default_neighbours():
    styles, truth = planted_styles(np.random.default_rng(1), per_cluster=200)
    labels = cluster_styles(styles, seed=0)
    assert adjusted_rand_score(truth, labels) > 0.9


def test_same_seed_same_labels_and_labels_sorted_by_size():
    styles, _ = planted_styles(np.random.default_rng(2), per_cluster=40)
    a = cluster_styles(styles, n_neighbors=20, seed=3)
    b = cluster_styles(styles, n_neighbors=20, seed=3)
    np.testing.assert_array_equal(a, b)
    counts = np.bincount(a)
    assert np.all(np.diff(counts) <= 0)


def test_higher_resolution_gives_at_least_as_many_clusters():
    styles, _ = planted_styles(np.random.default_rng(4), n_clusters=3, per_cluster=50)
    low = cluster_styles(styles, n_neighbors=20, resolution=0.1)
    high = cluster_styles(styles, n_neighbors=20, resolution=3.0)
    assert np.unique(high).size >= np.unique(low).size


def test_knn_graph_is_simple_and_connects_neighbours():
    styles = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    g = knn_graph(styles, n_neighbors=1)
    assert isinstance(g, igraph.Graph)
    assert g.is_simple() and not g.is_directed()
    assert sorted(tuple(sorted(e.tuple)) for e in g.es) == [(0, 1), (2, 3)]


def test_knn_graph_clamps_neighbours_with_warning():
    styles = np.random.default_rng(5).normal(size=(4, 8))
    with pytest.warns(UserWarning, match="only 4 styles"):
        g = knn_graph(styles, n_neighbors=100)
    assert g.ecount() == 6  # complete graph on 4 vertices


def test_leiden_on_disconnected_graph_gives_components():
    g = igraph.Graph(n=5, edges=[(0, 1), (2, 3)])
    labels = leiden_partition(g, seed=0)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert np.unique(labels).size == 3


@pytest.mark.parametrize(
    ("styles", "match"),
    [
        (np.ones(5), "shape"),
        (np.ones((1, 5)), "at least 2"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN"),
    ],
)
def test_bad_styles_raise(styles, match):
    with pytest.raises(ValueError, match=match):
        cluster_styles(styles, n_neighbors=1)


def test_bad_parameters_raise():
    styles = np.eye(3)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_graph(styles, n_neighbors=0)
    with pytest.raises(ValueError, match="resolution"):
        leiden_partition(knn_graph(styles, n_neighbors=1), resolution=0)
    assert check_styles(styles).dtype == np.float64


def test_merge_small_clusters_moves_singletons_to_nearest():
    styles, truth = planted_styles(np.random.default_rng(6), n_clusters=2, per_cluster=10)
    labels = truth.copy()
    labels[0] = 7  # a singleton cluster
    merged = merge_small_clusters(styles, labels, min_size=2)
    assert np.unique(merged).size == 2
    assert adjusted_rand_score(truth, merged) == 1.0


def test_merge_small_clusters_all_small_gives_one_cluster():
    merged = merge_small_clusters(np.eye(3), [0, 1, 2], min_size=2)
    np.testing.assert_array_equal(merged, [0, 0, 0])


@pytest.mark.parametrize("n", [2, 5, 40])
def test_tsne_shapes_and_seed(n):
    styles = np.random.default_rng(n).normal(size=(n, 16))
    a = tsne_embedding(styles, seed=1)
    b = tsne_embedding(styles, seed=1)
    assert a.shape == (n, 2)
    np.testing.assert_allclose(a, b)
