"""Benchmark per-ROI measurements: ``cp2_engine.metrics.measure_rois`` against skimage.

A synthetic 2048 x 2048 label image with 2,000 touching cells (seeds grown by 20 px) and a
two-channel float image. cp2 reports the median of several runs after one warm-up run;
``skimage.measure.regionprops_table`` with the same properties is timed once. Measured
2026-12 on this project's 2-core machine shared with other jobs (load 8-9): 0.36-0.45 s CPU,
1.1-1.7 s wall; regionprops_table 10.4 s wall in the same run (0.78 s wall at load 7).

Usage::

    python benchmarks/bench_measure.py            # 2048x2048, 2,000 ROIs
    python benchmarks/bench_measure.py --no-skimage
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from skimage.segmentation import expand_labels

from cp2_engine.metrics import measure_rois

PROPS = (
    "label",
    "centroid",
    "area",
    "equivalent_diameter_area",
    "perimeter",
    "eccentricity",
    "solidity",
    "intensity_mean",
)


def make_data(side: int = 2048, n: int = 2000, seed: int = 0):
    """(labels, image): ``n`` grown seeds on a ``side`` square, a (side, side, 2) image."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), np.int32)
    labels[rng.integers(0, side, n), rng.integers(0, side, n)] = np.arange(1, n + 1)
    labels = expand_labels(labels, 20)
    return labels, rng.random((side, side, 2)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-skimage", action="store_true")
    parser.add_argument("--quick", action="store_true", help="(the same run; for run_all)")
    args = parser.parse_args()
    labels, image = make_data(args.side, args.n)
    n_rois = len(np.unique(labels)) - 1
    measure_rois(labels, image, scale=(0.65, 0.65))  # warm-up
    times, cpu = [], []
    for _ in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        measure_rois(labels, image, scale=(0.65, 0.65))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(f"{args.side}x{args.side}, {n_rois} ROIs, 2 channels")
    print(
        f"cp2 measure_rois: median {statistics.median(times):.3f} s wall, "
        f"{statistics.median(cpu):.3f} s CPU over {args.runs} runs (single-threaded: on a shared "
        "machine the wall time grows with the load, the CPU time does not)"
    )
    if not args.no_skimage:
        from skimage.measure import regionprops_table

        t0 = time.perf_counter()
        regionprops_table(labels, intensity_image=image, properties=PROPS)
        ref = time.perf_counter() - t0
        print(f"skimage regionprops_table: {ref:.3f} s")
        cp2 = statistics.median(times)
        print(f"RESULT bench_measure: skimage {ref:.3f} s, cp2 {cp2:.3f} s, {ref / cp2:.1f}x")


if __name__ == "__main__":
    main()
