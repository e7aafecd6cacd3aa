"""Small helpers shared by every layer: draining progress generators, atomic file
writes, the CPU allocator settings, restricted loading of pickled ``.npy`` files."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_allocator": ["tune_allocator"],
        "_atomic": ["DiskFullError", "atomic_write", "atomic_write_file"],
        "_progress": ["ProgressEvent", "drain", "format_duration", "relay"],
        "_safe_npy": ["UnsafeFileError", "load_npy_restricted"],
    },
)
