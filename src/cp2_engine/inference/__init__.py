"""Segmenting an image: the single-model :class:`Model` (normalise, rescale to the model's
diameter, tiles and flips, network, masks), its config, the size model that estimates the
diameter, and a classical baseline segmenter. Every segmenter follows :class:`Segmenter`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_classic": ["ClassicSegmenter"],
        "_config": ["SegmentConfig", "resolve_niter"],
        "_diameter": ["DiameterEstimate", "refine_diameter"],
        "_model": ["Model", "masks_from_flows"],
        "_planes": ["PlaneProgress"],
        "_protocol": ["SegmentProgress", "Segmenter", "iter_segment_many"],
        "_segmentation": ["Segmentation", "save_segmentation_npy"],
        "_size_model": ["MIN_DIAMETER", "SizeModel", "fit_size_model"],
        "_tiling": [
            "TileGrid",
            "accumulate_tiles",
            "grid_tiles",
            "make_tile_grid",
            "pad_widths",
            "run_tiled",
            "taper_mask",
        ],
        "_transforms": [
            "MIN_RANGE",
            "check_image",
            "convert_image",
            "fit_channels",
            "normalize99",
            "resize_image",
        ],
    },
)
