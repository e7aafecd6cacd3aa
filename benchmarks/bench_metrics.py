"""Benchmark average precision at 3 IoU thresholds: cp2 against Cellpose, in the same run.

The label pair is synthetic: ~2000 touching cells on 2048x2048 as ground truth, and a
prediction with about 10% of the cells dropped and the rest shifted and grown (~1800 masks).
cp2 is timed in this process, Cellpose in a subprocess of its own venv
(``CP2_CELLPOSE_PYTHON`` or ``.venv-cellpose/bin/python``) on the same arrays; both report the
median of several runs after one warm-up run (which includes numba compilation).

Usage::

    python benchmarks/bench_metrics.py           # 2048x2048, ~2000 vs ~1800 masks
    python benchmarks/bench_metrics.py --quick   # 1024x1024, ~500 vs ~450 masks
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
from skimage.segmentation import expand_labels, relabel_sequential

from cp2_engine.metrics import average_precision

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.75, 0.9)

_CELLPOSE_WORKER = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    from cellpose import metrics

    folder, repeats = sys.argv[1], int(sys.argv[2])
    data = np.load(folder + "/pair.npz")
    true, pred = data["true"], data["pred"]
    ths = [0.5, 0.75, 0.9]
    ap, tp, fp, fn = metrics.average_precision(true, pred, threshold=ths)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        metrics.average_precision(true, pred, threshold=ths)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(times), "tp": np.asarray(tp).tolist()}))
    """
)


def make_pair(size: int, n_cells: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Touching cells (random seeds grown into each other) and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), dtype=np.int32)
    ys, xs = rng.integers(0, size, n_cells), rng.integers(0, size, n_cells)
    seeds[ys, xs] = np.arange(1, n_cells + 1)
    true = relabel_sequential(expand_labels(seeds, 16))[0]
    pred = np.roll(true, (2, -1), axis=(0, 1))
    ids = np.unique(pred)[1:]
    pred[np.isin(pred, rng.choice(ids, size=len(ids) // 10, replace=False))] = 0
    pred = relabel_sequential(expand_labels(pred, 1))[0]
    return true.astype(np.uint16), pred.astype(np.uint16)


def time_cp2(true, pred, repeats: int) -> tuple[float, list]:
    res = average_precision(true, pred, thresholds=THRESHOLDS)  # warm-up (numba)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        average_precision(true, pred, thresholds=THRESHOLDS)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res.tp.tolist()


def time_cellpose(true, pred, repeats: int) -> dict | None:
    python = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    if not Path(python).exists():
        print(f"reference cellpose not found at {python}: skipping it")
        return None
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "pair.npz", true=true, pred=pred)
        out = subprocess.run(
            [python, "-c", _CELLPOSE_WORKER, folder, str(repeats)],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024x1024 with ~500 masks")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side")
    args = parser.parse_args(argv)
    size, n_cells = (1024, 500) if args.quick else (2048, 2000)
    repeats = args.repeats or (3 if args.quick else 7)
    true, pred = make_pair(size, n_cells)
    n_true, n_pred = len(np.unique(true)) - 1, len(np.unique(pred)) - 1
    print(f"AP at {THRESHOLDS} on {size}x{size}: {n_true} true vs {n_pred} predicted masks")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    cp2_time, cp2_tp = time_cp2(true, pred, repeats)
    print(f"cp2       median {cp2_time * 1e3:8.1f} ms  TP {cp2_tp}")
    ref = time_cellpose(true, pred, repeats)
    if ref is not None:
        print(f"cellpose  median {ref['median'] * 1e3:8.1f} ms  TP {ref['tp']}")
        print(f"ratio cellpose / cp2 = {ref['median'] / cp2_time:.2f}x (>1 means cp2 is faster)")
        if [list(map(int, row)) for row in np.atleast_2d(ref["tp"])] != cp2_tp:
            print("WARNING: TP counts differ between cp2 and cellpose")
    return 0


if __name__ == "__main__":
    sys.exit(main())
