"""Files: images (tif, png, zarr), Cellpose ``_seg.npy`` and ``_masks.tif``, ImageJ ROIs; atomic
writes that never overwrite an annotation unless asked.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_io": [
            "IMAGE_EXTENSIONS",
            "LABEL_SUFFIXES",
            "atomic_write",
            "atomic_write_file",
            "find_image_label_pairs",
            "find_label_files",
            "flow_to_rgb",
            "give_default_permissions",
            "imread",
            "imwrite",
            "load_seg_npy",
            "masks_outlines",
            "overlay_png",
            "read_labels",
            "save_imagej_rois",
            "save_masks",
            "save_seg_npy",
        ],
    },
)
