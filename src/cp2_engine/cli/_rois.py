"""``cp2 rois``: export the ROIs of label files for Fiji, Cellpose and QuPath.

For each label file ``<name>_cp_masks.tif`` / ``<name>_masks.tif`` / ``<name>_seg.npy`` (or a
folder of them) it writes, in ``--out`` or beside the file, per ``--format``:

``imagej``   ``<name>_rois.zip``         ImageJ/Fiji ROI Manager (one polygon per ROI)
``outlines`` ``<name>_cp_outlines.txt``  Cellpose outlines (one ``x,y,...`` line per ROI)
``geojson``  ``<name>.geojson``          QuPath detections (File > Import objects)
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "rois"
HELP = "export ROIs of label files as ImageJ zip, Cellpose outlines txt or GeoJSON (QuPath)"

FORMATS = {"imagej": "_rois.zip", "outlines": "_cp_outlines.txt", "geojson": ".geojson"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 rois`` arguments to ``parser``."""
    parser.add_argument("paths", nargs="+", type=Path, help="label files or folders of them")
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        action="append",
        help="format(s) to write (repeat for several; default: all three)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def export_rois(masks, stem: str, folder: Path, formats, *, overwrite: bool) -> list[Path]:
    """Write the ROIs of ``masks`` as ``folder / (stem + suffix)`` for each format."""
    from cp2_engine import io

    writers = {
        "imagej": io.save_imagej_rois,
        "outlines": io.save_outlines_txt,
        "geojson": io.save_geojson,
    }
    return [
        writers[f](folder / f"{stem}{FORMATS[f]}", masks, overwrite=overwrite) for f in formats
    ]


def run(args: argparse.Namespace) -> int:
    """Export every label file's ROIs; print one line per file."""
    from cp2_engine import io

    files: dict[str, Path] = {}
    for path in args.paths:
        if path.is_dir():
            files.update(io.find_label_files(path))
        elif path.is_file():
            stem = path.name.removesuffix("_seg.npy") if path.name.endswith("_seg.npy") else None
            stem = stem or path.stem.removesuffix("_cp_masks").removesuffix("_masks")
            files[stem] = path
        else:
            raise FileNotFoundError(f"label file not found: {path}")
    if not files:
        raise FileNotFoundError(f"no label files in {[str(p) for p in args.paths]}")
    formats = args.format or list(FORMATS)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for stem, path in files.items():
        masks = io.read_labels(path)
        if not masks.any():
            print(f"{path.name}: no ROIs, nothing written")
            continue
        folder = args.out if args.out is not None else path.parent
        written = export_rois(masks, stem, folder, formats, overwrite=args.overwrite)
        print(
            f"{path.name}: {int(len(set(masks.ravel().tolist())) - 1)} ROIs -> "
            + ", ".join(p.name for p in written)
        )
    return 0
