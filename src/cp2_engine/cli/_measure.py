"""``cp2 measure``: per-ROI measurements of labelled images into one CSV table.

Each input is an image file (its labels are found beside it, or in ``--labels-dir``, by the
naming rule of :func:`cp2_engine.io.find_label_files`: ``<name>_masks``, ``<name>_cp_masks``,
``<name>_seg.npy``) or a folder of such images. One row per ROI, with an ``image`` column.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

NAME = "measure"
HELP = "measure every ROI (area, shape, intensity per channel) of labelled images into a CSV"

_KINDS = {"auto": ("_masks", "_cp_masks", "_seg"), "masks": ("_masks",)}
_KINDS.update({"cp_masks": ("_cp_masks",), "seg": ("_seg",)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 measure`` arguments to ``parser``."""
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="the CSV table to write")
    parser.add_argument(
        "--labels-dir", type=Path, default=None, help="folder of the label files (default: beside)"
    )
    parser.add_argument(
        "--labels",
        choices=sorted(_KINDS),
        default="auto",
        help="which label file: _masks, _cp_masks, _seg.npy (auto: first found in that order)",
    )
    parser.add_argument(
        "--pixel-size", type=float, nargs="+", default=None, help="pixel size (one, or y x)"
    )
    parser.add_argument("--unit", default="um", help="unit of --pixel-size (column names)")
    parser.add_argument(
        "--channel-axis", type=int, default=None, help="channel axis of 3-D images (default last)"
    )
    parser.add_argument("--no-intensity", action="store_true", help="shape columns only")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table")


def pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """``(image, labels)`` of every input image; an image without labels is an error."""
    from cp2_engine import io

    images = []
    for path in args.paths:
        if path.is_dir():
            images += [p for p in io.find_images(path) if p.is_file()]
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    found: dict[Path, dict] = {}
    out = []
    for image in images:
        folder = args.labels_dir if args.labels_dir is not None else image.parent
        if folder not in found:
            found[folder] = io.find_label_files(folder, kinds=_KINDS[args.labels])
        base = io.image_base(image)
        if base not in found[folder]:
            raise FileNotFoundError(
                f"no label file for {image.name} in {folder} (expected {base}_masks.tif, "
                f"{base}_cp_masks.tif or {base}_seg.npy)"
            )
        out.append((image, found[folder][base]))
    if not out:
        raise FileNotFoundError(f"no images in {[str(p) for p in args.paths]}")
    return out


def _scale(args: argparse.Namespace):
    if args.pixel_size is None:
        return None
    if len(args.pixel_size) not in (1, 2):
        raise ValueError(f"--pixel-size takes one or two values (y x), got {args.pixel_size}")
    return tuple(args.pixel_size * (3 - len(args.pixel_size)))[:2]


def run(args: argparse.Namespace) -> int:
    """Measure every image's ROIs and write the table; print one line per image."""
    from cp2_engine import io
    from cp2_engine.metrics import measure_rois

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    tables = {}
    for image_path, label_path in pairs(args):
        labels = io.read_labels(label_path)
        image = None if args.no_intensity else io.imread(image_path)
        tables[image_path.name] = measure_rois(
            labels, image, channel_axis=args.channel_axis, scale=_scale(args), unit=args.unit
        )
        print(f"{image_path.name}: {tables[image_path.name].n_rois} ROIs ({label_path.name})")
    io.save_measurements_csv(args.out, tables, overwrite=args.overwrite)
    print(f"{sum(t.n_rois for t in tables.values())} ROIs of {len(tables)} images -> {args.out}")
    return 0
