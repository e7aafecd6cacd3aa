"""Training: one step-based SGD driver (one checkpoint format, one precision policy) serving
epoch runs (HITL rounds, folder training, zoo specialists: the paper's warm-up and online/offline
schedules) and bundled-model recipe cycles, as generators of progress events; flow and
cell-probability losses, augmentation and training datasets.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_augment": ["random_rotate_and_resize"],
        "_checkpoint": ["checkpoint_path"],
        "_config": ["TrainConfig", "learning_rate_schedule"],
        "_driver": [
            "StepPlan",
            "TrainState",
            "load_checkpoint",
            "new_net",
            "run_steps",
            "trim_log",
        ],
        "_datasets": [
            "Subset",
            "from_arrays",
            "load_folder",
            "remove_overlaps",
            "split_quarters",
            "take_subset",
            "training_subsets",
        ],
        "_events": [
            "CheckpointSaved",
            "EpochEvent",
            "StepEvent",
            "TrainEvent",
            "TrainResult",
            "TrainStarted",
        ],
        "_loop": ["iter_train", "preload", "train"],
        "_resumable": [
            "discard_unfinished",
            "finish_unfinished",
            "iter_train_resumable",
            "unfinished_path",
        ],
        "_size": ["train_size_model"],
        "_stacks": ["stack_to_planes"],
    },
)
