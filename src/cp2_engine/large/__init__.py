"""Images larger than memory: zarr/dask block grid, shared network tiles of one whole-image
pass, ownership of cells by centroid, resumable chunk writes, dask.distributed clusters.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_network": [
            "NetworkLayout",
            "blended_output",
            "block_intensity_stats",
            "intensity_range",
            "network_input",
            "network_sums",
        ],
        "_segment": [
            "BlockGrid",
            "duplicate_cells",
            "iter_segment_large",
            "local_cluster",
            "owned_cells",
            "segment_large",
        ],
        "_tasks": ["TilesDone"],
    },
)
