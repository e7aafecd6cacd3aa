"""Tests of cp2_engine.zoo.StyleRouter: votes, ties, noise stability, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cp2_engine.zoo import StyleRouter


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def two_cluster_styles(rng, n=30, dim=64):
    centres = unit(rng.normal(size=(2, dim)))
    labels = np.repeat([0, 1], n)
    styles = unit(centres[labels] + rng.normal(scale=0.02, size=(2 * n, dim)))
    return styles, labels, centres


def test_routes_training_styles_to_their_clusters():
    styles, labels, _ = two_cluster_styles(np.random.default_rng(0))
    router = StyleRouter.fit(styles, labels, model_names={0: "a", 1: "b"})
    decisions = router.route_batch(styles)
    assert [d.cluster for d in decisions] == labels.tolist()
    assert {d.model_name for d in decisions} == {"a", "b"}


def test_routing_is_stable_under_small_noise():
    rng = np.random.default_rng(1)
    styles, labels, centres = two_cluster_styles(rng)
    router = StyleRouter.fit(styles, labels)
    queries = unit(centres[labels] + rng.normal(scale=0.02, size=styles.shape))
    base = [d.cluster for d in router.route_batch(queries)]
    noisy = unit(queries + rng.normal(scale=1e-3, size=queries.shape))
    assert [d.cluster for d in router.route_batch(noisy)] == base
    assert base == labels.tolist()


def test_decision_reports_votes_and_reason():
    styles = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    router = StyleRouter.fit(styles, [0, 0, 0, 1, 1])
    d = router.route(np.array([0.95, 0.05]))
    assert d.cluster == 0 and d.model_name == "cluster0"
    assert len(d.votes) == 5
    dists = [v[1] for v in d.votes]
    assert dists == sorted(dists)
    assert d.vote_counts == {0: 3, 1: 2}
    assert "3/5" in d.reason


def test_tie_goes_to_cluster_of_nearest_neighbour():
    styles = np.array([[1.0, 0.0], [0.0, 1.0]])
    router = StyleRouter.fit(styles, [0, 1], n_neighbors=5)
    assert router.n_neighbors == 2
    assert router.route(np.array([0.2, 0.8])).cluster == 1
    assert router.route(np.array([0.8, 0.2])).cluster == 0


def test_router_errors_name_expectations():
    with pytest.raises(ValueError, match="integer labels"):
        StyleRouter.fit(np.eye(3), [0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match="integer labels"):
        StyleRouter.fit(np.eye(3), [0, 1])
    router = StyleRouter.fit(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="width 3"):
        router.route(np.ones(4))
    with pytest.raises(ValueError, match="one style"):
        router.route(np.eye(3))
