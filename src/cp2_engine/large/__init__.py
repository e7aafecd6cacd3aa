"""Images larger than memory: zarr/dask block grid, shared network tiles of one whole-image
pass, ownership of cells by centroid, resumable chunk writes, dask.distributed clusters.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_network": ["NetworkLayout"],
        "_blocks": ["BlockGrid"],
        "_cluster": ["local_cluster"],
        "_segment": ["iter_segment_large", "segment_large"],
        "_tasks": ["TilesDone"],
    },
)
