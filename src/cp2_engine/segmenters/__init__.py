"""The one factory for segmenters: a model key (bundled name, weights path or ``zoo:<folder>``)
becomes a :class:`~cp2_engine.inference.Segmenter`. The CLI and the napari plugin load models
only through here; the zoo depends on the single model, never the other way round.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={"_factory": ["ZOO_PREFIX", "is_zoo_key", "load_segmenter", "zoo_key"]},
)
