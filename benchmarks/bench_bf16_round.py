"""Benchmark: one whole human-in-the-loop round in fp32 against bf16 autocast on the CPU.

Does bf16 keep the loss curve and the resulting model? Each variant fine-tunes the bundled
``cp2_cyto`` from the same weights, on the same seeded synthetic bright-field images, with the
paper's online settings (100 epochs x 8 images, SGD lr 0.1, warm-up over 10 epochs), in a fresh
process with the same thread count. Reported per variant: the wall time of the round, the mean
loss of the last 10 epochs, the largest gap between the two 10-epoch moving averages of the loss,
and AP@0.5 / AP@0.75 of the trained model on held-out images (segmented in fp32, so only the
training precision differs). The ratio fp32/bf16 of the round time is measured in the same run.

    python benchmarks/bench_bf16_round.py            # the full round, 100 epochs (~14 min)
    python benchmarks/bench_bf16_round.py --quick    # 10 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIAMETER = 24.0
VARIANTS = ("fp32", "bf16")


def _data(n_train: int, n_test: int):
    from cp2_engine.synthetic import touching_cells

    made = [
        touching_cells((256, 256), diameter=DIAMETER, style="brightfield", seed=900 + i)
        for i in range(n_train + n_test)
    ]
    return made[:n_train], made[n_train:]


def _worker(variant: str, epochs: int, threads: int, n_train: int, n_test: int) -> dict:
    """Train one variant in this process and score it; return a JSON-able dict."""
    import time

    import torch

    from cp2_engine.inference import Model
    from cp2_engine.metrics import average_precision
    from cp2_engine.training import TrainConfig, train

    torch.set_num_threads(threads)
    train_set, test_set = _data(n_train, n_test)
    config = TrainConfig(mode="online", n_epochs=epochs, device="cpu", precision=variant)
    t0 = time.perf_counter()
    result = train(
        "cp2_cyto", [s.image for s in train_set], [s.labels for s in train_set], config=config
    )
    seconds = time.perf_counter() - t0
    model = Model.from_net(result.net.float(), device="cpu")
    preds = [model.segment(s.image, diameter=DIAMETER).masks for s in test_set]
    ap = average_precision([s.labels for s in test_set], preds, thresholds=(0.5, 0.75)).mean_ap
    return {"seconds": seconds, "losses": list(result.losses), "ap": [float(a) for a in ap]}


def _moving_average(values, width: int = 10) -> np.ndarray:
    values = np.asarray(values, float)
    width = min(width, len(values))
    return np.convolve(values, np.ones(width) / width, mode="valid")


def _run_variant(variant: str, args, folder: Path) -> dict:
    out = folder / f"{variant}.json"
    cmd = [sys.executable, __file__, "--worker", variant, "--json", str(out)]
    cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
    cmd += ["--n-train", str(args.n_train), "--n-test", str(args.n_test)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def _report(results: dict, epochs: int) -> None:
    print(f"{'variant':<8}{'round s':>9}{'last-10 loss':>14}{'AP@0.5':>8}{'AP@0.75':>9}")
    for name, r in results.items():
        last = float(np.mean(r["losses"][-10:]))
        print(f"{name:<8}{r['seconds']:>9.1f}{last:>14.4f}{r['ap'][0]:>8.3f}{r['ap'][1]:>9.3f}")
    fp32, bf16 = (_moving_average(results[v]["losses"]) for v in VARIANTS)
    gap = np.abs(fp32 - bf16)
    at = int(gap.argmax())
    print(f"largest gap of the 10-epoch moving averages: {gap[at]:.4f} "
          f"(epochs {at + 1}-{at + 10}; fp32 loss there {fp32[at]:.4f})")  # fmt: skip
    ratio = results["fp32"]["seconds"] / results["bf16"]["seconds"]
    print(f"RESULT round of {epochs} epochs: fp32 {results['fp32']['seconds']:.0f} s, "
          f"bf16 {results['bf16']['seconds']:.0f} s ({ratio:.2f}x); AP@0.5 fp32 "
          f"{results['fp32']['ap'][0]:.3f} vs bf16 {results['bf16']['ap'][0]:.3f}")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 epochs instead of 100")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=3, help="corrected images in the round")
    parser.add_argument("--n-test", type=int, default=4)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (10 if args.quick else 100)
    if args.worker:
        result = _worker(args.worker, args.epochs, args.threads, args.n_train, args.n_test)
        Path(args.json).write_text(json.dumps(result))
        return 0
    print(f"one HITL round: cp2_cyto fine-tuned on {args.n_train} synthetic bright-field images, "
          f"{args.epochs} epochs x 8 images, {args.threads} threads")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        results = {v: _run_variant(v, args, Path(tmp)) for v in VARIANTS}
    _report(results, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
