"""Benchmark training throughput: cp2's SGD step against Cellpose's own, in the same run.

One training step = forward + loss + backward + SGD step on a batch of 8 x 2 x 224 x 224 crops
(cp2 augmentation of synthetic cells, targets from cp2's flows). Both sides start from the same
weights, see the same batch, use the same loss formula (MSE(5 x flows)/2 + BCE-with-logits) and
SGD settings (lr 0.1, momentum 0.9, weight decay 1e-4), and run in fresh subprocesses with the
same thread count and the same glibc allocator settings (``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` raised for both, see performance-notes). The reference is
Cellpose 3.1.x's ``CPnet`` from ``.venv-cellpose`` (or ``CP2_CELLPOSE_PYTHON``).

Reported: median step time, images/s, ratio cp2/cellpose throughput (target >= 1.0), the loss
of each step (agreement of the variants: fp32, channels-last, bf16 autocast on CPU), and the
time of one human-in-the-loop retrain round (100 epochs x 8 images = 100 steps) extrapolated
from the measured step plus augmentation time; ``--full`` also runs that round for real.

Usage::

    python benchmarks/bench_train.py --quick   # 2 timed steps, fp32 only
    python benchmarks/bench_train.py           # 4 timed steps, fp32 / channels-last / bf16
    python benchmarks/bench_train.py --full    # ... plus a real 100-epoch round with train()
                                               # (default precision; --bf16 or --fp32 to force)
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

_STEP_LOOP = """
def loss_fn(y, t):
    mse = torch.nn.functional.mse_loss(y[:, :2].float(), 5 * t[:, 1:]) / 2
    return mse + torch.nn.functional.binary_cross_entropy_with_logits(
        y[:, 2].float(), (t[:, 0] > 0.5).float())

opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1,
                      momentum=0.9, weight_decay=1e-4)
times, losses = [], []
for i in range(steps + 1):
    t0 = time.perf_counter()
    with ctx():
        y = net(x)[0]
    loss = loss_fn(y, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if i:
        times.append(time.perf_counter() - t0)
    losses.append(float(loss.detach()))
json.dump({"times": times, "losses": losses}, open(out, "w"))
"""

_CELLPOSE_WORKER = textwrap.dedent(
    """
    import contextlib, json, sys, time
    import numpy as np, torch
    from cellpose.resnet_torch import CPnet
    folder, steps, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder + "/x.npy"))
    target = torch.from_numpy(np.load(folder + "/target.npy"))
    net = CPnet([2, 32, 64, 128, 256], 3, 3)
    net.load_state_dict(torch.load(folder + "/weights", weights_only=True))
    net.train()
    ctx = contextlib.nullcontext
    """
) + textwrap.dedent(_STEP_LOOP)

_CP2_WORKER = textwrap.dedent(
    """
    import contextlib, json, sys, time
    import numpy as np, torch
    from cp2_engine.network import build_net_from_state, load_state_dict
    folder, steps, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    variant = sys.argv[5]
    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(folder + "/x.npy"))
    target = torch.from_numpy(np.load(folder + "/target.npy"))
    net = build_net_from_state(load_state_dict(folder + "/weights")).train()
    if "channels_last" in variant:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = contextlib.nullcontext
    if "bf16" in variant:
        ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    """
) + textwrap.dedent(_STEP_LOOP)


def _make_batch(folder: Path, batch: int) -> float:
    """Write x.npy, target.npy and weights; return the augmentation time per batch (s)."""
    import torch

    from cp2_engine.inference import convert_image
    from cp2_engine.network import CPnet, save_model
    from cp2_engine.postprocess import masks_to_flows
    from cp2_engine.synthetic import touching_cells
    from cp2_engine.training import random_rotate_and_resize

    cells = [touching_cells((256, 256), n_cells=40, diameter=30, seed=i) for i in range(batch)]
    imgs = [convert_image(c.image, normalize=True) for c in cells]
    labs = [c.labels.astype(np.int64) for c in cells]
    flows = [masks_to_flows(lb) for lb in labs]
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        b = random_rotate_and_resize(imgs, labs, flows, rng=np.random.default_rng(i), bsize=224)
        times.append(time.perf_counter() - t0)
    np.save(folder / "x.npy", b.images.numpy())
    np.save(folder / "target.npy", b.target().numpy())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(CPnet(), folder / "weights")
    return statistics.median(times)


def _run(python: str, script: str, folder: Path, name: str, steps: int, threads: int, *extra):
    """Run a worker script in a fresh process with the tuned allocator; return its JSON."""
    path = folder / f"worker_{name}.py"
    path.write_text(script)
    out = folder / f"{name}.json"
    env = dict(os.environ, **TUNED_MALLOC)
    cmd = [python, str(path), str(folder), str(steps), str(threads), str(out), *extra]
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def _cellpose_python() -> str | None:
    path = os.environ.get("CP2_CELLPOSE_PYTHON", str(REPO / ".venv-cellpose/bin/python"))
    return path if Path(path).exists() else None


def _full_round(threads: int, *, precision: str = "auto") -> float:
    import torch

    from cp2_engine.network import CPnet
    from cp2_engine.synthetic import touching_cells
    from cp2_engine.training import TrainConfig, train

    torch.set_num_threads(threads)
    cells = [touching_cells((256, 256), n_cells=40, diameter=30, seed=i) for i in range(8)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = CPnet()
    cfg = TrainConfig(mode="online", n_epochs=100, device="cpu", precision=precision)
    t0 = time.perf_counter()
    train(net, [c.image for c in cells], [c.labels for c in cells], config=cfg)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 timed steps, fp32 only")
    parser.add_argument("--full", action="store_true", help="also time a real 100-epoch round")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="run the --full round in bf16")
    precision.add_argument("--fp32", action="store_true", help="run the --full round in fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="repeat, report per-round ratios")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    steps = 2 if args.quick else 4
    variants = ["fp32"] if args.quick else ["fp32", "channels_last", "bf16"]
    print(f"batch {args.batch}x2x224x224, {steps} timed steps after 1 warm-up, "
          f"{args.threads} threads, allocator tuned for both sides: {TUNED_MALLOC}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        aug = _make_batch(folder, args.batch)
        cellpose = _cellpose_python()
        if not cellpose:
            print("reference cellpose venv not found: cp2 rows only")
        rounds = [
            _one_round(folder, cellpose, variants, steps, args.threads) for _ in range(args.rounds)
        ]
    _report(rounds[-1], aug, args.batch)
    if len(rounds) > 1 and cellpose:
        _report_rounds(rounds)
    if args.full:
        precision = "bf16" if args.bf16 else "fp32" if args.fp32 else "auto"
        seconds = _full_round(args.threads, precision=precision)
        how = {"auto": "default precision"}.get(precision, precision)
        print(f"HITL round measured with train() ({how}): "
              f"{seconds:.1f} s")  # fmt: skip
    return 0


def _one_round(folder: Path, cellpose, variants, steps: int, threads: int) -> dict:
    """Time Cellpose and every cp2 variant once each, one after the other."""
    results = {}
    if cellpose:
        results["cellpose"] = _run(cellpose, _CELLPOSE_WORKER, folder, "cellpose", steps, threads)
    for v in variants:
        results[f"cp2 {v}"] = _run(
            sys.executable, _CP2_WORKER, folder, f"cp2_{v}", steps, threads, v
        )
    return results


def _report_rounds(rounds: list[dict]) -> None:
    """Per-round throughput ratios: each round's Cellpose and cp2 runs are minutes apart at
    most, so machine-speed drift between rounds cancels in the per-round ratio."""
    for name in rounds[0]:
        if name == "cellpose":
            continue
        ratios = [
            statistics.median(r["cellpose"]["times"]) / statistics.median(r[name]["times"])
            for r in rounds
        ]
        listed = ", ".join(f"{x:.2f}" for x in ratios)
        median = statistics.median(ratios)
        print(f"{name}: per-round ratio vs cellpose {listed}; median {median:.2f}x")


def _report(results: dict, aug: float, batch: int) -> None:
    base = results.get("cellpose")
    base_t = statistics.median(base["times"]) if base else None
    ref_losses = np.array(results["cp2 fp32"]["losses"])
    print(f"augmentation: {1000 * aug:.1f} ms per batch")
    print(f"{'variant':<18} {'step s':>7} {'img/s':>6} {'vs cellpose':>11} "
          f"{'max |loss - cp2 fp32|':>22}  losses")  # fmt: skip
    for name, r in results.items():
        t = statistics.median(r["times"])
        ratio = f"{base_t / t:.2f}x" if base_t else "-"
        dl = np.abs(np.array(r["losses"]) - ref_losses).max()
        losses = " ".join(f"{v:.4f}" for v in r["losses"])
        print(f"{name:<18} {t:7.2f} {batch / t:6.2f} {ratio:>11} {dl:22.2e}  {losses}")
    for name, r in results.items():
        round_s = 100 * (statistics.median(r["times"]) + aug)
        print(f"HITL round (100 epochs x 8 images) extrapolated, {name}: {round_s / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
