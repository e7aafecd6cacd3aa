"""``cp2 demo``: segment the sample images with the bundled models, run a simulated human in the
loop, and write a report (see :mod:`cp2_engine.demo._run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cp2_engine.cli._progress import ProgressDisplay

NAME = "demo"
HELP = (
    "segment the sample images with the bundled models (masks, _seg.npy, overlays, AP), run 3 "
    "simulated human-in-the-loop rounds (pretrained vs scratch) and write report.md/.html"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 demo`` arguments to ``parser``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo_output"),
        help="output folder: new, empty, or an earlier demo output (which is replaced); any "
        "other non-empty folder is refused",
    )
    parser.add_argument(
        "--sample-dir",
        "--samples",
        dest="sample_dir",
        type=Path,
        default=None,
        help="folder of <name>.tif + <name>_masks.tif (default: the bundled sample_data/)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the HITL images and training")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for CI: one 128-px sample crop per model, 64-px HITL images, 1 epoch "
        "per round (the real pipeline end to end)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo, print progress, a summary table, the report paths and napari hints."""
    from cp2_engine.demo import iter_demo, napari_hint, summary_lines

    result = ProgressDisplay("cp2 demo").follow(
        iter_demo(args.out, sample_dir=args.sample_dir, quick=args.quick, seed=args.seed)
    )
    print()
    print("\n".join(summary_lines(result)))
    print(f"\nreport: {result.report_html} (open in a browser) and {result.report_md}")
    print(f"demo finished in {result.seconds:.0f} s\n\nopen the results in napari:")
    print("\n".join(f"  {line}" for line in napari_hint(result)))
    return 0
