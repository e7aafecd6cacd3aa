"""Files: images (tif, png, zarr), Cellpose ``_seg.npy`` and ``_masks.tif``, ImageJ ROIs,
Cellpose outlines and GeoJSON (QuPath), measurement CSV tables,
pairing images with labels. Writers are atomic and never overwrite an annotation unless asked.

``atomic_write``, ``atomic_write_file`` and ``give_default_permissions`` (now in
:mod:`cp2_engine.util`) and ``flow_to_rgb``, ``masks_outlines``, ``overlay_png`` (now in
:mod:`cp2_engine.viz`) are still importable from here.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_cellpose_files": ["load_seg_npy", "read_labels", "save_masks", "save_seg_npy"],
        "_images": ["IMAGE_EXTENSIONS", "imread", "imwrite", "open_zarr_array"],
        "_pairs": [
            "LABEL_SUFFIXES",
            "find_image_label_pairs",
            "find_images",
            "find_label_files",
            "image_base",
            "split_label_name",
        ],
        "_reexports": [
            "atomic_write",
            "atomic_write_file",
            "flow_to_rgb",
            "give_default_permissions",
            "masks_outlines",
            "overlay_png",
        ],
        "_roi_formats": ["mask_rings", "save_geojson", "save_outlines_txt"],
        "_rois": ["save_imagej_rois"],
        "_tables": ["save_measurements_csv"],
    },
)
