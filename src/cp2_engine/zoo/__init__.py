"""Model zoo: style vectors, Leiden clusters of styles, specialists per cluster, routing.

The pure parts (clustering, routing, the zoo folder) import no torch; the parts that run a
network (``styles``, ``build``, ``evaluate``, :class:`ZooModel`) import it when used.
"""

from cp2_engine.zoo.clustering import (
    cluster_styles,
    knn_graph,
    leiden_partition,
    merge_small_clusters,
    tsne_embedding,
)
from cp2_engine.zoo.routing import RouteDecision, StyleRouter
from cp2_engine.zoo.store import Zoo, ZooCluster, ZooManifest, load_zoo, save_zoo

__all__ = [
    "RouteDecision",
    "StyleRouter",
    "Zoo",
    "ZooCluster",
    "ZooManifest",
    "cluster_styles",
    "knn_graph",
    "leiden_partition",
    "load_zoo",
    "merge_small_clusters",
    "save_zoo",
    "tsne_embedding",
]
