"""Files: images (tif, png, zarr), Cellpose ``_seg.npy`` and ``_masks.tif``, ImageJ ROIs,
Cellpose outlines and GeoJSON (QuPath), measurement CSV tables,
pairing images with labels. Writers are atomic and never overwrite an annotation unless asked.

Atomic writes themselves are in :mod:`cp2_engine.util`, pictures (flow colouring, outlines,
overlays) in :mod:`cp2_engine.viz`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_cellpose_files": ["load_seg_npy", "read_labels", "save_masks", "save_seg_npy"],
        "_images": ["imread", "imwrite", "open_zarr_array"],
        "_pairs": [
            "LABEL_SUFFIXES",
            "find_image_label_pairs",
            "find_images",
            "find_label_files",
            "image_base",
            "split_label_name",
        ],
        "_roi_formats": ["save_geojson", "save_outlines_txt"],
        "_rois": ["save_imagej_rois"],
        "_tables": ["save_measurements_csv"],
    },
)
