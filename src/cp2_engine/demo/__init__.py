"""The demo (``make demo``): segment the sample images with the bundled models, a short
human-in-the-loop run, and an HTML/Markdown report.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_report": ["napari_hint", "summary_lines"],
        "_run": ["iter_demo", "run_demo"],
        "_samples": ["default_sample_dir", "find_samples", "model_for_sample"],
        "_settings": [
            "DemoEvent",
            "DemoImage",
            "DemoResult",
            "DemoSettings",
            "HitlRound",
            "HitlRun",
        ],
    },
)
