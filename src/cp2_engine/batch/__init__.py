"""Batch segmentation: many images (files, folders, arrays) as one progress generator, with
resume (complete and current outputs are skipped), a summary table, measurements and ROI
exports; what the plugin's Batch panel runs in a worker."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_run": ["BatchProgress", "BatchResult", "BatchRow", "iter_segment_batch"],
    },
)
