"""Offline sample data: the repository's ``sample_data/`` folder, else the synthetic generator.

Nothing is downloaded. In an editable install (or a source checkout) the images come from
``<repo>/sample_data``; a built wheel has no such folder, and the samples are then generated with
:func:`cp2_engine.synthetic.touching_cells` (seeded, so always the same image). The z-stack sample
is always generated, with :func:`cp2_engine.synthetic.touching_cells_3d`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ._layers import TRUTH_SUFFIX

__all__ = [
    "load_sample",
    "sample_data_dir",
    "sample_nuclei",
    "sample_phase",
    "sample_synthetic",
    "sample_tissue_rgb",
    "sample_zstack",
]

logger = logging.getLogger(__name__)

#: Sample key -> (file stem in sample_data/, synthetic fallback settings).
SAMPLES = {
    "synthetic": ("synthetic_fluo_cells", {"seed": 7, "style": "fluorescence", "diameter": 29}),
    "nuclei": ("dsb2018_fluo_nuclei", {"seed": 3, "style": "fluorescence", "diameter": 18}),
    "phase": ("usiigaci_phase_3t3", {"seed": 11, "style": "phase", "diameter": 24}),
    "tissue_rgb": ("dsb2018_tissue_rgb", {"seed": 5, "style": "brightfield", "diameter": 24}),
}


#: The z-stack sample: name, and settings of ``touching_cells_3d`` (seeded; ~90 cells).
ZSTACK = ("synthetic_zstack", {"shape": (24, 128, 128), "diameter": 20.0, "anisotropy": 2.0,
                               "seed": 18})  # fmt: skip


def sample_data_dir() -> Path | None:
    """The sample-data folder: ``$CP2_SAMPLE_DATA``, else ``<repo>/sample_data``, else None.

    Examples
    --------
    >>> d = sample_data_dir()
    >>> d is None or d.is_dir()
    True
    """
    env = os.environ.get("CP2_SAMPLE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "sample_data")
    return next((c for c in candidates if c.is_dir()), None)


def load_sample(key: str) -> list[tuple[np.ndarray, dict, str]]:
    """Layer data of sample ``key``: the image, and its ground truth as a hidden labels layer.

    Examples
    --------
    >>> [kind for _, _, kind in load_sample("synthetic")]
    ['image', 'labels']
    """
    if key == "zstack":
        return _zstack()
    if key not in SAMPLES:
        raise ValueError(f"unknown sample {key!r}; expected one of {sorted([*SAMPLES, 'zstack'])}")
    stem, fallback = SAMPLES[key]
    folder = sample_data_dir()
    image_path = folder / f"{stem}.tif" if folder is not None else None
    if image_path is not None and image_path.is_file():
        import tifffile

        image = tifffile.imread(image_path)
        truth_path = image_path.with_name(f"{stem}_masks.tif")
        truth = tifffile.imread(truth_path) if truth_path.is_file() else None
    else:
        from cp2_engine.synthetic import touching_cells

        logger.info("cp2: %s not found; generating a synthetic sample", stem)
        synth = touching_cells((256, 256), **fallback)
        image, truth = synth.image, synth.labels
    out = [(image, {"name": stem, "rgb": image.ndim == 3 and image.shape[-1] in (3, 4)}, "image")]
    if truth is not None:
        out.append((truth, {"name": stem + TRUTH_SUFFIX, "visible": False}, "labels"))
    return out


def _zstack() -> list[tuple[np.ndarray, dict, str]]:
    from cp2_engine.synthetic import touching_cells_3d

    name, settings = ZSTACK
    synth = touching_cells_3d(**settings)
    scale = (settings["anisotropy"], 1.0, 1.0)  # planes are further apart than pixels
    meta = {"name": name, "scale": scale, "metadata": {"cp2_diameter": settings["diameter"]}}
    truth = {"name": name + TRUTH_SUFFIX, "visible": False, "scale": scale}
    return [(synth.image, meta, "image"), (synth.labels, truth, "labels")]


def sample_synthetic():
    """Synthetic fluorescent cells (cp2 generator, seed 7)."""
    return load_sample("synthetic")


def sample_nuclei():
    """DSB2018 fluorescent nuclei (CC0)."""
    return load_sample("nuclei")


def sample_phase():
    """Usiigaci phase-contrast NIH/3T3 cells (MIT)."""
    return load_sample("phase")


def sample_tissue_rgb():
    """DSB2018 stained tissue, RGB (CC0)."""
    return load_sample("tissue_rgb")


def sample_zstack():
    """Synthetic z-stack of touching cells (cp2 3-D generator, 24 x 128 x 128, anisotropy 2)."""
    return load_sample("zstack")
