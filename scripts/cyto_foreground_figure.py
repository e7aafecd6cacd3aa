"""The figure of what limits ``cp2_cyto``'s whole-cell outlines (docs/images/cyto_foreground.png).

A crop of a Usiigaci validation image (default ``usiigaci_set48``, a phase-contrast image of
small cells) segmented whole by the bundled ``cp2_cyto`` at the image's annotated median
diameter (``splits/usiigaci_val.csv``), in three panels: the image; the annotation (green) and
``cp2_cyto``'s masks (magenta) outlined on it; the predicted cell probability with the
annotation's outlines. Usage::

    .venv/bin/python scripts/cyto_foreground_figure.py [--data DATASETS/usiigaci] \\
        [--image usiigaci_set48] [--crop Y X SIZE] [--out docs/images/cyto_foreground.png]

The data come from ``--data``, else ``$CP2_DATASETS/usiigaci``, else
``../shared/datasets/usiigaci`` beside the repository (``train/<id>_img.tif`` and
``train/<id>_masks.tif``). The PNG is written atomically (matplotlib Agg, no randomness).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("cyto_foreground_figure")


def default_data() -> Path:
    """``$CP2_DATASETS/usiigaci``, else ``../shared/datasets/usiigaci`` beside the repository."""
    base = os.environ.get("CP2_DATASETS")
    return (Path(base) if base else ROOT.parent / "shared" / "datasets") / "usiigaci"


def annotated_diameter(image_id: str) -> float:
    """The image's annotated median diameter from ``splits/usiigaci_val.csv``."""
    with open(ROOT / "splits" / "usiigaci_val.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["id"] == image_id:
                return float(row["median_diameter_px"])
    raise ValueError(f"{image_id!r} is not in splits/usiigaci_val.csv: expected a validation id")


def segment_crop(data: Path, image_id: str, crop: tuple[int, int, int]):
    """Image, annotation, cp2_cyto masks and cell probability of the crop (the whole image is
    segmented, as the validation does, then cropped)."""
    from cp2_engine.inference import Model
    from cp2_engine.io import imread

    image = imread(data / "train" / f"{image_id}_img.tif")
    truth = imread(data / "train" / f"{image_id}_masks.tif")
    diameter = annotated_diameter(image_id)
    seg = Model.load("cp2_cyto").segment(image, diameter=diameter)
    y, x, size = crop
    window = (slice(y, y + size), slice(x, x + size))
    log.info("%s at diameter %.1f px: %d masks (%d annotated)", image_id, diameter,
             seg.masks.max(), truth.max())  # fmt: skip
    return image[window], truth[window], seg.masks[window], seg.cellprob[window]


def plot(image, truth, masks, cellprob, path: Path, title: str) -> Path:
    """Write the three-panel PNG to ``path`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cp2_engine.util import atomic_write
    from cp2_engine.viz import masks_outlines, overlay_rgb

    fig = Figure(figsize=(9.6, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].imshow(overlay_rgb(image, np.zeros_like(truth)))
    axes[0].set_title(title, fontsize=9)
    axes[1].imshow(overlay_rgb(image, truth, masks))
    axes[1].set_title("annotation (green), cp2_cyto (magenta)", fontsize=9)
    axes[2].imshow(cellprob, cmap="magma")
    outline = np.ma.masked_equal((masks_outlines(truth) > 0).astype(np.uint8), 0)
    axes[2].imshow(outline, cmap="Greens", vmin=0, vmax=1.5, interpolation="nearest")
    axes[2].set_title("cell probability, annotation outline", fontsize=9)
    for ax in axes:
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the usiigaci dataset folder")
    parser.add_argument("--image", default="usiigaci_set48", help="a validation image id")
    parser.add_argument(
        "--crop",
        type=int,
        nargs=3,
        default=(288, 300, 256),
        metavar=("Y", "X", "SIZE"),
        help="the crop's top-left corner and size",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "images" / "cyto_foreground.png"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = args.data if args.data is not None else default_data()
    parts = segment_crop(data, args.image, tuple(args.crop))
    title = f"phase contrast (Usiigaci {args.image.removeprefix('usiigaci_')}, crop)"
    print(f"wrote {plot(*parts, args.out, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
