"""``cp2 export``: write a model as a BioImage.IO model package (``.zip``) and test it."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "export"
HELP = (
    "export a model as a BioImage.IO package (.zip: pytorch_state_dict, torchscript, onnx) "
    "and run bioimageio's own test on each weight format"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 export`` arguments to ``parser``."""
    parser.add_argument("model", help="model name or weights file (e.g. cp2_nuclei)")
    parser.add_argument("--format", default="bioimageio", choices=["bioimageio"])
    parser.add_argument("--out", required=True, help="package to write (NAME.zip)")
    parser.add_argument(
        "--sample",
        help="image for the test tensors and the cover (default: the bundled model's real "
        "sample image in sample_data/, else a synthetic image)",
    )
    parser.add_argument(
        "--diameter",
        type=float,
        help="object diameter in the sample (px; default: from <sample>_masks.tif if it "
        "exists, else the model's estimate)",
    )
    parser.add_argument("--channels", type=int, nargs=2, default=[0, 0], metavar=("C", "C2"))
    parser.add_argument("--name", help="model name in the package (default: the model's)")
    parser.add_argument("--author", action="append", help="author name (repeatable)")
    parser.add_argument("--licence", default="BSD-3-Clause", help="SPDX licence id")
    parser.add_argument(
        "--weight-formats",
        nargs="+",
        default=["pytorch_state_dict", "torchscript", "onnx"],
        choices=["pytorch_state_dict", "torchscript", "onnx"],
    )
    parser.add_argument("--no-test", action="store_true", help="skip bioimageio's test")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")


def _default_sample(model: str) -> Path | None:
    from cp2_engine.demo import default_sample_dir, find_samples, model_for_sample

    try:
        samples = find_samples(default_sample_dir())
    except FileNotFoundError:
        return None
    ours = [(name.startswith("synthetic_"), img) for name, img, _ in samples
            if model_for_sample(name) == model]  # fmt: skip
    return min(ours)[1] if ours else None  # a real image before a synthetic one


def _diameter_from_masks(sample: Path) -> float | None:
    masks = sample.with_name(f"{sample.stem}_masks{sample.suffix}")
    if not masks.is_file():
        return None
    from cp2_engine.io import read_labels
    from cp2_engine.metrics import diameters

    return float(diameters(read_labels(masks))[0])


def run(args: argparse.Namespace) -> int:
    """Run ``cp2 export`` and return the exit status (1 when bioimageio's test fails)."""
    from cp2_engine.cli._progress import ProgressDisplay
    from cp2_engine.export import iter_export_bioimageio

    sample = Path(args.sample) if args.sample else _default_sample(args.model)
    diameter = args.diameter
    if diameter is None and sample is not None:
        diameter = _diameter_from_masks(sample)
    gen = iter_export_bioimageio(
        args.model,
        args.out,
        sample=sample,
        diameter=diameter,
        channels=tuple(args.channels),
        name=args.name,
        authors=args.author,
        licence=args.licence,
        weight_formats=args.weight_formats,
        test=not args.no_test,
        overwrite=args.overwrite,
    )
    try:
        result = ProgressDisplay("export").follow(gen)
    except ImportError as err:
        print(f"cp2 export: error: {err}")
        return 2
    print(f"wrote {result.path} in {result.export_seconds:.1f} s")
    for test in result.tests:
        print(f"bioimageio test {test.weight_format}: {'passed' if test.passed else 'FAILED'}")
        for error in test.errors:
            print(f"  {error}")
    if result.tests:
        print(f"tests took {result.test_seconds:.1f} s")
    return 0 if (result.passed or not result.tests) else 1
