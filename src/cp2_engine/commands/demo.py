"""``cp2 demo``: run the engine on the bundled sample images and report what it measured."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = (
    "round-trip the sample images (labels -> flows -> masks, AP, overlays) and time the "
    "network with random weights (the bundled models are used by cp2 segment)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cp2 demo`` arguments to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument(
        "--samples", type=Path, default=None, help="folder of <name>.tif + <name>_masks.tif"
    )
    parser.add_argument(
        "--quick", action="store_true", help="two small images and one tile (for CI)"
    )


def _print_table(result) -> None:
    print(f"\n{'image':<24} {'true':>5} {'found':>5} {'AP@0.5':>7} {'AP@0.75':>8} {'AP@0.9':>7}")
    for r in result.images:
        print(
            f"{r.name:<24} {r.n_true:>5} {r.n_pred:>5} {r.ap[0]:>7.3f} {r.ap[1]:>8.3f} "
            f"{r.ap[2]:>7.3f}"
        )


def run(args: argparse.Namespace) -> int:
    """Run the demo, print progress, the AP table and where the outputs are."""
    from tqdm import tqdm

    from ..demo import NO_MODEL_NOTE, iter_demo

    print(NO_MODEL_NOTE)
    gen = iter_demo(args.out, sample_dir=args.samples, quick=args.quick)
    with tqdm(total=None, unit="step", desc="cp2 demo") as bar:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            bar.total = event.total
            bar.update(1)
            bar.set_postfix_str(event.message[:60])
            tqdm.write(event.message)
    _print_table(result)
    print(
        f"\nnetwork with random weights: {result.forward_seconds:.3f} s per forward pass of "
        f"{result.forward_batch} x {result.tile}x{result.tile} tiles (CPU)"
    )
    print(f"overlays and summary: {result.out_dir} ({result.summary.name})")
    return 0
