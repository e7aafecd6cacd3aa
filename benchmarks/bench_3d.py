"""3-D segmentation time: cp2 ``segment(do_3d=True)`` vs Cellpose 3.1.1.3 ``eval(do_3D=True)``.

Both run the SAME weights (the bundled, trained ``cp2_nuclei``, diameter 17, so rescale 1) on the
same synthetic stack (default 64x512x512 with ~300 touching cells; ``--quick`` 16x128x128 with
~20) with the same thread count, each side in its own process (Cellpose in its venv).

Stages: end to end (normalisation, the network on YX/ZY/ZX planes, 3-D dynamics, clustering,
hole filling) and the 3-D dynamics alone: Cellpose's ``resize_and_compute_masks(do_3D=True)`` and
cp2's ``compute_masks_3d`` on Cellpose's own flows (identical input). The AP@0.5 of each side
against the exact labels and of cp2 against Cellpose is printed.

Usage::

    python benchmarks/bench_3d.py --quick
    python benchmarks/bench_3d.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_CELLPOSE_SIDE = textwrap.dedent(
    """
    import json, sys, time, warnings
    import numpy as np, torch
    warnings.simplefilter("ignore")
    from cellpose import dynamics, models
    weights, folder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    img = np.load(folder + "/stack.npy")
    m = models.CellposeModel(pretrained_model=weights, gpu=False)
    kw = dict(diameter=17.0, channels=[0, 0], z_axis=0, do_3D=True, min_size=15)
    m.eval(img[:4, :64, :64], **kw)  # warm-up (numba JIT)
    t = time.perf_counter()
    masks, flows, _ = m.eval(img, **kw)
    total = time.perf_counter() - t
    t = time.perf_counter()
    dynamics.resize_and_compute_masks(flows[1], flows[2], niter=200, do_3D=True, min_size=15)
    dyn = time.perf_counter() - t
    np.savez(folder + "/cellpose.npz", masks=masks, dP=flows[1], cellprob=flows[2])
    json.dump({"total": total, "dynamics": dyn}, open(folder + "/cellpose.json", "w"))
    """
)


def _cp2_side(stack: np.ndarray, folder: Path, threads: int) -> dict:
    import torch

    from cp2_engine.inference import Model
    from cp2_engine.postprocess import compute_masks_3d

    torch.set_num_threads(threads)
    for key in ("CP2_BACKEND", "CP2_PRECISION"):  # time what users get
        os.environ.pop(key, None)
    model = Model.load("cp2_nuclei", device="cpu")
    model.segment(stack[:4, :64, :64], diameter=17.0, do_3d=True)  # warm-up (numba JIT)
    t = time.perf_counter()
    seg = model.segment(stack, diameter=17.0, do_3d=True)
    total = time.perf_counter() - t
    ref = np.load(folder / "cellpose.npz")
    compute_masks_3d(ref["dP"][:, :4, :32, :32], ref["cellprob"][:4, :32, :32])
    t = time.perf_counter()
    compute_masks_3d(ref["dP"], ref["cellprob"], niter=200, min_size=15)
    dyn = time.perf_counter() - t
    return {"total": total, "dynamics": dyn, "masks": seg.masks, "timings": seg.timings}


def main() -> int:
    from cp2_engine.metrics import average_precision
    from cp2_engine.network import bundled_dir
    from cp2_engine.synthetic import touching_cells_3d

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16x128x128 stack")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    shape, n_cells = ((16, 128, 128), 20) if args.quick else ((64, 512, 512), 300)
    python = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    cells = touching_cells_3d(shape, diameter=17, n_cells=n_cells, seed=0)
    print(f"stack {shape}, {cells.labels.max()} cells, {args.threads} threads, weights cp2_nuclei")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "stack.npy", cells.image)
        weights = str(bundled_dir() / "cp2_nuclei")
        cmd = [python, "-c", _CELLPOSE_SIDE, weights, str(folder), str(args.threads)]
        subprocess.run(cmd, check=True)
        ref = json.loads((folder / "cellpose.json").read_text())
        ref_masks = np.load(folder / "cellpose.npz")["masks"]
        ours = _cp2_side(cells.image, folder, args.threads)
    ap_ref = average_precision(cells.labels, ref_masks, thresholds=(0.5,)).ap[0, 0]
    ap_ours = average_precision(cells.labels, ours["masks"], thresholds=(0.5,)).ap[0, 0]
    ap_vs = average_precision(ref_masks, ours["masks"], thresholds=(0.5,)).ap[0, 0]
    print(f"cp2 stages: { {k: round(v, 2) for k, v in ours['timings'].items()} }")
    print(
        f"AP@0.5 vs truth: cellpose {ap_ref:.3f}, cp2 {ap_ours:.3f}; cp2 vs cellpose {ap_vs:.3f}"
    )
    for stage in ("dynamics", "total"):
        c, o = ref[stage], ours[stage]
        print(f"RESULT bench_3d {stage}: cellpose {c:.2f} s, cp2 {o:.2f} s, speed-up {c / o:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
