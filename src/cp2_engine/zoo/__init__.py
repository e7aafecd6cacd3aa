"""Model zoo: style vectors, Leiden clusters of styles, one specialist per cluster, and 5-NN
routing of new images to a specialist (:class:`ZooModel`).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_build": ["BuildEvent", "build_zoo", "iter_build_zoo"],
        "_build_config": ["ZooBuildConfig"],
        "_clustering": ["cluster_styles", "knn_graph", "leiden_partition", "tsne_embedding"],
        "_evaluate": ["ZooEvaluation", "evaluate_zoo", "iter_evaluate_zoo", "plot_ap_curves"],
        "_routing": ["RouteDecision", "StyleRouter", "ZooModel", "ZooSegmentation"],
        "_store": ["Zoo", "ZooCluster", "ZooManifest", "load_zoo", "save_zoo"],
        "_styles": ["compute_styles"],
    },
)
