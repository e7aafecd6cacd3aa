"""Seeded synthetic cell images with exact labels, for tests, benchmarks and sample data."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_cells": ["disks", "touching_cells"],
        "_cells3d": ["touching_cells_3d"],
    },
)
