"""Bundled-model recipes: parse a recipe, prepare its data, train it with checkpoints and
exact resume, and install the result (float16 export, size model, validation figures).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_data": ["is_bundled_recipe", "load_bundled_recipe", "read_recipe_toml"],
        "_events": [
            "CycleFinished",
            "CycleResult",
            "CycleStarted",
            "DataPrepared",
            "RecipeResult",
        ],
        "_install": [
            "InstallResult",
            "Installed",
            "diameter_errors",
            "evaluate",
            "format_table",
            "summarise",
        ],
        "_training": ["TIME_PROBE_STEPS", "iter_train_recipe", "train_recipe"],
    },
)
