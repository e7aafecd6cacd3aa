"""End-to-end segmentation time: cp2 ``Model.segment`` vs cellpose ``CellposeModel.eval``.

Both run the SAME weights file on the same synthetic image (default 2048x2048, 2000 touching
cells of diameter 30) with the same settings (diameter 30, channels [0, 0], flow_threshold 0.4,
cellprob_threshold 0, min_size 15, tile overlap 0.1, batch 8) and the same thread count.

Weights: random weights do not find cells, which would make the flows->masks stages trivially
cheap. So, unless ``--weights`` is given, a CPnet is trained briefly from random init on
separate synthetic images (never the benchmark image, no oracle; see :func:`trained_weights`)
and cached in ``~/.cache/cp2/``; the run prints how many cells each side found and their AP,
so one can see that the weights produce cells.

Stages timed: cp2 from ``Segmentation.timings`` (prepare, network, resize, masks); cellpose as
``eval(compute_masks=False)`` (network incl. its preprocessing) and ``dynamics.compute_masks``
on its own output (masks), plus the full ``eval`` (total). A cross-check also times cp2's
``compute_masks`` on cellpose's network output (identical input to both mask stages).
cp2 is run three times: the torch eager fp32 path (``precision="fp32", backend="torch"``), the
exact path (fp32 on the default backend: OpenVINO where installed; matches cellpose to float
rounding) and the default (``precision="auto"``: bf16 where the CPU computes it natively);
each path's AP and its agreement with cellpose's masks are printed.

Allocator: cp2 tunes glibc malloc in-process (``network.tune_allocator``, what users get);
cellpose runs with glibc defaults (what its users get) unless ``--same-allocator`` gives it
the equivalent ``MALLOC_*_`` environment variables. Each side runs in its own process.

Usage::

    python benchmarks/bench_end_to_end.py --quick     # 2048x2048, 1 repeat (make bench)
    python benchmarks/bench_end_to_end.py --small     # 512x512, 1 repeat
    python benchmarks/bench_end_to_end.py             # 2048x2048, median of 3
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
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
PATHS = {  # cp2 paths timed: the old default, the exact path and what users get now
    "cp2 torch fp32": {"precision": "fp32", "backend": "torch"},
    "cp2 exact": {"precision": "fp32", "backend": "auto"},
    "cp2 default": {"precision": "auto", "backend": "auto"},
}
TRAIN = {"n_images": 8, "size": 256, "crop": 96, "batch": 8, "steps": 51, "lr": 2e-3, "seed": 0}

_CELLPOSE_SIDE = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import torch
    from cellpose import dynamics, models
    weights, folder = sys.argv[1], sys.argv[2]
    repeats, threads = int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    img = np.load(folder + "/image.npy")
    kw = dict(diameter=30.0, channels=[0, 0], flow_threshold=0.4, cellprob_threshold=0.0,
              min_size=15, batch_size=8)
    m = models.CellposeModel(pretrained_model=weights, gpu=False)
    m.eval(img[:256, :256], **kw)  # warm-up (numba JIT)
    res = {"total": [], "network": [], "masks": []}
    for _ in range(repeats):
        t = time.perf_counter()
        masks = m.eval(img, **kw)[0]
        res["total"].append(time.perf_counter() - t)
        t = time.perf_counter()
        flows = m.eval(img, compute_masks=False, **kw)[1]
        res["network"].append(time.perf_counter() - t)
        t = time.perf_counter()
        dynamics.compute_masks(flows[1], flows[2], niter=200, cellprob_threshold=0.0,
                               flow_threshold=0.4, min_size=15, max_size_fraction=0.4)
        res["masks"].append(time.perf_counter() - t)
    np.savez(folder + "/cellpose.npz", masks=masks, dP=flows[1], cellprob=flows[2])
    json.dump(res, open(folder + "/cellpose.json", "w"))
    """
)


def _cache_path() -> Path:
    key = "_".join(f"{k}{v}" for k, v in TRAIN.items())
    return Path.home() / ".cache" / "cp2" / f"bench_end_to_end_weights_{key}"


def _crops(data, rng, crop: int, batch: int):
    """A batch of random crops (with flips) of (normalised image, 5 x flows, foreground)."""
    import torch

    xs, ys = [], []
    for _ in range(batch):
        x, y = data[rng.integers(len(data))]
        i, j = rng.integers(0, x.shape[-2] - crop + 1), rng.integers(0, x.shape[-1] - crop + 1)
        x, y = x[:, i : i + crop, j : j + crop], y[:, i : i + crop, j : j + crop].copy()
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
            y[0] = -y[0]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def trained_weights() -> Path:
    """Briefly train (once, then cached) a CPnet from random init on synthetic cells.

    A minimal AdamW loop on random crops with the Cellpose loss (MSE on 5 x flows / 2 + BCE on
    the foreground), so that the benchmark network finds cells. It never sees the benchmark
    image. (cp2's full trainer adds augmentation that this short fit does not need.)
    """
    import torch
    import torch.nn.functional as F

    from cp2_engine.inference import convert_image
    from cp2_engine.network import CPnet, save_model
    from cp2_engine.postprocess import masks_to_flows
    from cp2_engine.synthetic import touching_cells

    path = _cache_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(TRAIN["seed"])
    data = []
    for s in range(TRAIN["n_images"]):
        cells = touching_cells((TRAIN["size"],) * 2, diameter=30, seed=1000 + s)
        target = np.concatenate([5 * masks_to_flows(cells.labels), [cells.labels > 0]])
        data.append((convert_image(cells.image, normalize=True), target.astype(np.float32)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAIN["seed"])
        net = CPnet().train()
    opt = torch.optim.AdamW(net.parameters(), lr=TRAIN["lr"], weight_decay=1e-5)
    print(f"training benchmark weights once ({TRAIN['steps']} steps), cached at {path}")
    t0 = time.perf_counter()
    for step in range(TRAIN["steps"]):
        x, y = _crops(data, rng, TRAIN["crop"], TRAIN["batch"])
        out, _ = net(x)
        loss = F.mse_loss(out[:, :2], y[:, :2]) / 2 + F.binary_cross_entropy_with_logits(
            out[:, 2], y[:, 2]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == TRAIN["steps"] - 1:
            print(f"  step {step}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
            save_model(net.eval(), path.with_name(path.name + "_partial"))
            net.train()
    net.diam_labels.data[:] = 30.0
    save_model(net.eval(), path)
    return path


def _run_cp2(weights: Path, image: np.ndarray, repeats: int, **options) -> tuple[dict, np.ndarray]:
    from cp2_engine.inference import Model

    model = Model.load(weights, device="cpu")
    model.segment(image[:256, :256], diameter=30.0, **options)  # warm-up (numba JIT, runtime)
    runs = []
    for _ in range(repeats):
        seg = model.segment(image, diameter=30.0, **options)
        runs.append(seg.timings)
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return stages, seg.masks


def _run_cellpose(python: str, weights: Path, folder: Path, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.same_allocator:
        env.update(TUNED_MALLOC)
    cmd = [python, "-c", _CELLPOSE_SIDE, str(weights), str(folder), str(args.repeats)]
    subprocess.run([*cmd, str(args.threads)], check=True, env=env, capture_output=True)
    times = json.loads((folder / "cellpose.json").read_text())
    return {k: statistics.median(v) for k, v in times.items()}


def _cross_check(folder: Path) -> tuple[float, np.ndarray]:
    from cp2_engine.postprocess import compute_masks

    ref = np.load(folder / "cellpose.npz")
    t0 = time.perf_counter()
    compute_masks(ref["dP"], ref["cellprob"])
    return time.perf_counter() - t0, ref["masks"]


def _report(cp2: dict, ref: dict, cross: float, masks: dict, truth: np.ndarray, paths: dict):
    from cp2_engine.metrics import average_precision

    print(f"\n{'stage':<34} {'cp2 s':>8} {'cellpose s':>11} {'speed-up':>9}")
    rows = [
        ("network (+ prepare/resize)", cp2["prepare"] + cp2["network"] + cp2.get("resize", 0.0)),
        ("flows -> masks", cp2["masks"]),
        ("total", cp2["total"]),
    ]
    for (label, ours), theirs in zip(rows, (ref["network"], ref["masks"], ref["total"])):
        print(f"{label:<34} {ours:>8.2f} {theirs:>11.2f} {theirs / ours:>8.2f}x")
    print(f"{'masks on cellpose output (cross)':<34} {cross:>8.2f} {ref['masks']:>11.2f} "
          f"{ref['masks'] / cross:>8.2f}x")  # fmt: skip
    n_true = int(truth.max())
    for name, m in masks.items():
        ap = average_precision(truth, m).ap[0]
        print(f"{name}: {int(m.max())} masks (truth {n_true}), AP@0.5/0.75/0.9 = "
              f"{ap[0]:.3f}/{ap[1]:.3f}/{ap[2]:.3f}")  # fmt: skip
    for name, stages in paths.items():
        agree = average_precision(masks["cellpose"], masks[name]).ap[0, 0]
        print(f"{name}: network {stages['prepare'] + stages['network']:.2f} s, total "
              f"{stages['total']:.2f} s ({ref['total'] / stages['total']:.2f}x vs cellpose), "
              f"masks vs cellpose AP@0.5 {agree:.3f}")  # fmt: skip
    return {name: ref["total"] / stages["total"] for name, stages in paths.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048x2048 image, 1 repeat")
    parser.add_argument("--small", action="store_true", help="512x512 image, 1 repeat")
    parser.add_argument("--weights", type=Path, default=None, help="weights file to use")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--same-allocator", action="store_true", help="tuned malloc for cellpose")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick or args.small else 3)
    for key in ("CP2_BACKEND", "CP2_PRECISION"):  # time what users get
        os.environ.pop(key, None)
    import torch

    from cp2_engine.synthetic import touching_cells

    torch.set_num_threads(args.threads)
    python = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    if not Path(python).exists():
        print(f"reference cellpose venv not found at {python}: nothing to compare")
        return 0
    weights = args.weights or trained_weights()
    size, n_cells = (512, 125) if args.small else (2048, 2000)
    sample = touching_cells((size, size), n_cells=n_cells, diameter=30, seed=0)
    malloc = "tuned MALLOC_* env" if args.same_allocator else "glibc defaults"
    print(f"image {size}x{size}, {int(sample.labels.max())} cells, weights {weights}, "
          f"{args.threads} threads, median of {args.repeats}; cellpose allocator: {malloc}, "
          "cp2: mallopt")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "image.npy", sample.image)
        ref = _run_cellpose(python, weights, folder, args)
        paths, masks = {}, {}
        for name, options in PATHS.items():
            paths[name], masks[name] = _run_cp2(weights, sample.image, args.repeats, **options)
        cross, masks["cellpose"] = _cross_check(folder)
    ratios = _report(paths["cp2 exact"], ref, cross, masks, sample.labels, paths)
    print("\nRESULT end-to-end speed-up (cellpose total / cp2 total): "
          + ", ".join(f"{ratios[k]:.2f}x {k[4:]}" for k in PATHS))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
