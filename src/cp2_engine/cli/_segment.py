"""``cp2 segment``: segment image files with a model and write masks, ``_seg.npy`` and overlays.

Outputs per image ``<name>`` (in ``--out`` or next to the image):
``<name>_cp_masks.tif``, ``<name>_seg.npy`` (unless ``--no-npy``), ``<name>_cp_overlay.png``,
and with ``--save-png`` ``<name>_cp_masks.png``, with ``--save-rois`` ``<name>_rois.zip``.
Existing outputs are never overwritten unless ``--overwrite`` is given; the check is done for
all images before anything is run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cp2_engine.cli._progress import ProgressDisplay

logger = logging.getLogger(__name__)

NAME = "segment"
HELP = "segment images with a Cellpose 2/3-compatible model (never downloads)"

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 segment`` arguments to ``parser``."""
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--model", required=True, help="model name, weights file or zoo:<folder>")
    parser.add_argument(
        "--diameter",
        type=float,
        default=None,
        help="cell diameter in px (default: size-model estimate, else the model's diam_labels)",
    )
    parser.add_argument("--chan", type=int, default=0, help="channel to segment (0 = grey)")
    parser.add_argument("--chan2", type=int, default=0, help="nuclear channel (0 = none)")
    parser.add_argument("--flow-threshold", type=float, default=0.4)
    parser.add_argument("--cellprob-threshold", type=float, default=0.0)
    parser.add_argument("--min-size", type=int, default=15)
    parser.add_argument("--augment", action="store_true", help="test-time flip augmentation")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="network precision: auto = bf16 where the CPU/GPU computes it natively, else fp32 "
        "(fp32 is the exact path)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "openvino"],
        help="what runs the network: auto = OpenVINO on the CPU where installed, else torch",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside)")
    stacks = parser.add_argument_group("z-stacks (Z, Y, X) or (Z, Y, X, C)")
    stacks.add_argument("--do-3d", action="store_true", help="3-D segmentation (YX, ZY, ZX)")
    stacks.add_argument("--anisotropy", type=float, default=None, help="z step / pixel size")
    stacks.add_argument(
        "--stitch-threshold", type=float, default=0.0, help="segment planes, stitch by IoU"
    )
    stacks.add_argument("--flow3d-smooth", type=float, default=0.0, help="sigma of 3-D flows")
    stacks.add_argument("--z-axis", type=int, default=None, help="axis of the planes (default 0)")
    parser.add_argument("--save-png", action="store_true", help="also write masks as 16-bit PNG")
    parser.add_argument("--save-rois", action="store_true", help="also write ImageJ ROIs (zip)")
    parser.add_argument("--no-npy", action="store_true", help="do not write <name>_seg.npy")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    large = parser.add_argument_group(
        "large images", "used when the input or --out is a .zarr (see docs/large_images.md)"
    )
    large.add_argument("--blocksize", type=int, default=2048, help="block side in pixels")
    large.add_argument("--overlap", type=int, default=None, help="context (default 2 x diameter)")
    large.add_argument(
        "--scheduler", default=None, help="dask scheduler address (default: a LocalCluster)"
    )
    large.add_argument("--workers", type=int, default=2, help="workers of the LocalCluster")


def _expand(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in _IMAGE_SUFFIXES
                and not p.stem.endswith(("_masks", "_cp_masks", "_cp_overlay"))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image not found: {path}")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in {paths}")
    return files


def output_paths(image: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The files ``cp2 segment`` writes for ``image`` with these ``args``."""
    folder = args.out if args.out is not None else image.parent
    stem = image.stem
    out = {
        "masks": folder / f"{stem}_cp_masks.tif",
        "overlay": folder / f"{stem}_cp_overlay.png",
    }
    if not args.no_npy:
        out["npy"] = folder / f"{stem}_seg.npy"
    if args.save_png:
        out["png"] = folder / f"{stem}_cp_masks.png"
    if args.save_rois:
        out["rois"] = folder / f"{stem}_rois.zip"
    return out


def _check_outputs(images: list[Path], args: argparse.Namespace) -> None:
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        return
    existing = [str(p) for img in images for p in output_paths(img, args).values() if p.exists()]
    if existing:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise FileExistsError(
            f"{len(existing)} output file(s) exist ({shown}); pass --overwrite to replace them"
        )


def _write_outputs(image, seg, outputs: dict[str, Path], model_name: str) -> None:
    from cp2_engine import io, viz
    from cp2_engine.inference import save_segmentation_npy

    io.save_masks(outputs["masks"], seg.masks, overwrite=True)
    if "npy" in outputs:
        save_segmentation_npy(
            outputs["npy"], seg, image=image, model_path=model_name, overwrite=True
        )
    if seg.masks.ndim == 3:
        logger.warning("z-stack: masks TIFF and _seg.npy written (PNG, ROIs, overlay are 2-D)")
        return
    if "png" in outputs:
        io.save_masks(outputs["png"], seg.masks, overwrite=True)
    if "rois" in outputs and seg.n_masks > 0:
        io.save_imagej_rois(outputs["rois"], seg.masks, overwrite=True)
    elif "rois" in outputs:
        logger.warning("no masks found: no ROI file written (%s)", outputs["rois"])
    viz.overlay_png(outputs["overlay"], image, seg.masks, overwrite=True)


def _config(args: argparse.Namespace):
    from cp2_engine.inference import SegmentConfig

    return SegmentConfig(
        diameter=args.diameter,
        channels=(args.chan, args.chan2),
        flow_threshold=args.flow_threshold,
        cellprob_threshold=args.cellprob_threshold,
        min_size=args.min_size,
        augment=args.augment,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        do_3d=args.do_3d,
        anisotropy=args.anisotropy,
        stitch_threshold=args.stitch_threshold,
        flow3d_smooth=args.flow3d_smooth,
        z_axis=args.z_axis,
    )


def _is_large(args: argparse.Namespace) -> bool:
    zarr_in = any(p.suffix == ".zarr" for p in args.paths)
    return zarr_in or (args.out is not None and args.out.suffix == ".zarr")


def _run_large(args: argparse.Namespace) -> int:
    """Segment one large image block by block on dask.distributed into a zarr array."""
    from cp2_engine.large import iter_segment_large

    if len(args.paths) != 1 or args.out is None or args.out.suffix != ".zarr":
        raise ValueError("large images: give one input image and --out LABELS.zarr")
    if args.diameter is None:
        raise ValueError("large images: --diameter is required (it sets the block context)")
    gen = iter_segment_large(
        str(args.paths[0]),
        model=args.model,
        diameter=args.diameter,
        out=args.out,
        blocksize=args.blocksize,
        overlap=args.overlap,
        cluster=args.scheduler,
        channels=(args.chan, args.chan2),
        overwrite=args.overwrite,
        n_workers=args.workers,
        config=_config(args),
    )
    result = ProgressDisplay("cp2 segment", unit="block").follow(gen)
    print(
        f"{args.paths[0]}: {result.n_cells} cells in {result.n_blocks} blocks "
        f"({result.n_blocks_skipped} already done) in {result.elapsed:.1f} s -> {result.out}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Segment every image and write the outputs; print one line per image."""
    from tqdm import tqdm

    from cp2_engine import io
    from cp2_engine.segmenters import load_segmenter

    if _is_large(args):
        return _run_large(args)
    config = _config(args)
    images = _expand(args.paths)
    _check_outputs(images, args)
    model = load_segmenter(args.model, device=config.device)
    with tqdm(total=len(images), unit="image", desc="cp2 segment") as bar:
        for path in images:
            image = io.imread(path)
            seg = model.segment(image, config=config)
            outputs = output_paths(path, args)
            _write_outputs(image, seg, outputs, str(args.model))
            bar.update(1)
            tqdm.write(
                f"{path.name}: {seg.n_masks} masks at diameter {seg.diameter:.1f} px "
                f"({seg.timings.get('total', 0.0):.2f} s) -> {outputs['masks'].name}"
            )
    return 0
