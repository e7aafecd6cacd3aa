"""Benchmark post-processing: masks → flows and flows → masks, cp2 against cellpose 3.1.1.3.

Input: a synthetic image with touching cells of diameter 30 (``cp2_engine.synthetic``), exact
flows ``dP = 5 * masks_to_flows(labels)`` and ``cellprob = ±5``. Both sides get the SAME arrays;
the reference runs in its own venv (``CP2_CELLPOSE_PYTHON`` or ``.venv-cellpose/bin/python``) in a
subprocess of this run, so the ratios compare like with like on a shared machine. Both sides use
the process's default thread counts (numba: all cores; torch: all cores) and glibc defaults.

Timings are medians of ``--repeats`` runs after one warm-up (numba caches compiled). Also
reported: process CPU time of the median run, and whether cp2's masks equal cellpose's.

Usage::

    python benchmarks/bench_postprocess.py           # 2048x2048, ~2000 cells, 5 repeats
    python benchmarks/bench_postprocess.py --quick   # 1024x1024, ~500 cells, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_CELLPOSE_WORKER = textwrap.dedent(
    """
    import json, statistics, sys, time, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from cellpose import dynamics

    folder, repeats = sys.argv[1], int(sys.argv[2])
    labels = np.load(folder + "/labels.npy").astype(np.int32)
    dP = np.load(folder + "/dP.npy")
    cellprob = np.load(folder + "/cellprob.npy")

    def masks():
        return dynamics.compute_masks(dP, cellprob, niter=200, cellprob_threshold=0.0,
                                      flow_threshold=0.4, min_size=15)

    def timed(fn):
        fn()
        wall, cpu = [], []
        for _ in range(repeats):
            c, t = time.process_time(), time.perf_counter()
            out = fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return out, statistics.median(wall), statistics.median(cpu)

    _, m2f, m2f_cpu = timed(lambda: dynamics.masks_to_flows(labels))
    out, f2m, f2m_cpu = timed(masks)
    np.save(folder + "/masks_cellpose.npy", out)
    print(json.dumps({"masks_to_flows": [m2f, m2f_cpu], "compute_masks": [f2m, f2m_cpu]}))
    """
)


def _timed(fn, repeats):
    fn()  # warm-up (numba compile or cache load)
    wall, cpu = [], []
    out = None
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return out, statistics.median(wall), statistics.median(cpu)


def _matched_ap50(a: np.ndarray, b: np.ndarray) -> float:
    from cp2_engine.metrics import average_precision

    return float(average_precision(a, b, thresholds=(0.5,)).ap[0, 0])


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def _run_cellpose(folder: Path, repeats: int) -> dict | None:
    python = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    if not Path(python).exists():
        print(f"reference cellpose venv not found at {python}: cp2 timings only")
        return None
    done = subprocess.run(
        [python, "-c", _CELLPOSE_WORKER, str(folder), str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024^2, ~500 cells, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    size, n_cells = (1024, 500) if args.quick else (2048, 2000)
    repeats = args.repeats or (3 if args.quick else 5)

    from cp2_engine.postprocess import compute_masks, masks_to_flows
    from cp2_engine.synthetic import touching_cells

    labels = touching_cells((size, size), n_cells=n_cells, diameter=30, seed=0).labels
    flows, m2f, m2f_cpu = _timed(lambda: masks_to_flows(labels), repeats)
    dP = 5 * flows
    cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    masks, f2m, f2m_cpu = _timed(lambda: compute_masks(dP, cellprob), repeats)
    print(
        f"image {size}x{size}, {labels.max()} cells, {int((labels > 0).sum())} foreground px, "
        f"median of {repeats} runs, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, arr in (("labels", labels), ("dP", dP), ("cellprob", cellprob)):
            np.save(folder / f"{name}.npy", arr)
        ref = _run_cellpose(folder, repeats)
        ref_masks = np.load(folder / "masks_cellpose.npy") if ref else None
    print(f"{'stage':<16}{'cp2 wall':>10}{'cp2 cpu':>10}{'cp wall':>10}{'cp cpu':>10}{'ratio':>8}")
    for stage, wall, cpu in (("masks_to_flows", m2f, m2f_cpu), ("compute_masks", f2m, f2m_cpu)):
        if ref is None:
            print(f"{stage:<16}{wall:>10.3f}{cpu:>10.3f}")
            continue
        r_wall, r_cpu = ref[stage]
        print(
            f"{stage:<16}{wall:>10.3f}{cpu:>10.3f}{r_wall:>10.3f}{r_cpu:>10.3f}"
            f"{r_wall / wall:>7.1f}x"
        )
    if ref_masks is not None:
        print(
            f"cp2 masks: {masks.max()}, cellpose masks: {ref_masks.max()}, "
            f"AP@0.5 cp2 vs cellpose: {_matched_ap50(ref_masks, masks):.4f}, "
            f"identical partition: {_same_partition(masks, ref_masks)}"
        )
    print(f"AP@0.5 cp2 vs ground truth: {_matched_ap50(labels, masks):.4f}")


if __name__ == "__main__":
    sys.exit(main())
