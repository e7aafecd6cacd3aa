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
        "_diameter": ["DiameterEstimate"],
        "_model": ["Model", "masks_from_flows"],
        "_planes": ["PlaneProgress"],
        "_protocol": ["SegmentProgress", "Segmenter", "iter_segment_many"],
        "_segmentation": ["Segmentation", "save_segmentation_npy"],
        "_size_model": ["SizeModel", "fit_size_model"],
        "_tiling": ["TileGrid", "accumulate_tiles", "make_tile_grid", "pad_widths", "run_tiled"],
        "_transforms": ["MIN_RANGE", "convert_image", "fit_channels", "resize_image"],
    },
)
