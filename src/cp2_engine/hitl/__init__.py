"""Human-in-the-loop: ROI accounting, a simulated annotator, the project on disk, and the
experiments that compare online (HITL) and offline training.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_accounting": ["RoiAccounting", "RoiRecord", "account_rois"],
        "_active": ["ImageScore", "RankProgress", "rank_images"],
        "_annotator": ["Correction", "KEEP_IOU", "SimulatedAnnotator"],
        "_cost": ["CostScore"],
        "_experiment_data": ["ExperimentData", "folder_data", "split_data", "synthetic_data"],
        "_experiment_results": ["EXPERIMENTS", "write_results"],
        "_experiments": [
            "ExperimentSettings",
            "HITL_STRATEGIES",
            "Progress",
            "Row",
            "iter_hitl_vs_offline",
            "iter_learning_curve",
            "pretrain_synthetic",
        ],
        "_lock": ["ProjectLockedError"],
        "_project": ["HitlProject", "ProjectStatus"],
        "_project_files": ["DEFAULT_INITIAL_MODEL"],
        "_rounds": ["RoundRecord"],
    },
)
