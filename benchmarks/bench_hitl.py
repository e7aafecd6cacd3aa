"""Time one human-in-the-loop retrain round: 100 epochs x 8 images per epoch, batch 8, 224².

cp2's round runs through :meth:`cp2_engine.hitl.HitlProject.iter_retrain` on 8 accepted
synthetic 256² images. The baseline, measured in the same run, is Cellpose's own training loop
(``cellpose.train.train_seg`` in the reference venv, SGD lr 0.1, wd 1e-4, nimg_per_epoch 8).

With ``--quick`` both sides run a few epochs and the round time is extrapolated from the
per-epoch time (first epoch excluded on the cp2 side; on the Cellpose side the per-epoch time is
the difference of two runs, so set-up costs cancel). Target: <= 300 s on 2 CPU cores.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_hitl.py --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cp2_engine.hitl import HitlProject
from cp2_engine.inference import Model
from cp2_engine.network import save_model
from cp2_engine.synthetic import touching_cells
from cp2_engine.training import EpochEvent, TrainConfig

REPO = Path(__file__).resolve().parents[1]
ROUND_EPOCHS = 100

_CELLPOSE_SCRIPT = r"""
import json, sys, tempfile, time
import numpy as np, torch
from cellpose import models, train
data = np.load(sys.argv[1])
images = [data[f"img{i}"] for i in range(8)]
labels = [data[f"lab{i}"] for i in range(8)]
out = {}
for n in map(int, sys.argv[2:]):
    net = models.CellposeModel(gpu=False, pretrained_model=False).net
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train.train_seg(net, train_data=images, train_labels=labels, channels=[0, 0],
                        n_epochs=n, nimg_per_epoch=8, batch_size=8, learning_rate=0.1,
                        weight_decay=1e-4, SGD=True, min_train_masks=1, save_path=tmp,
                        save_every=10**6)
        out[n] = time.perf_counter() - t0
print(json.dumps(out))
"""


def _data(n: int = 8):
    made = [touching_cells((256, 256), diameter=30, seed=s) for s in range(n)]
    return [m.image for m in made], [m.labels for m in made]


def time_cp2(images, labels, *, epochs: int, device: str) -> float:
    """Seconds per epoch of a cp2 HITL retrain (epochs after the first)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = Path(tmp) / "start_model"
        save_model(Model.random(seed=0).net, start)
        project = HitlProject.create(
            Path(tmp) / "proj", images=images, initial_model=str(start), device=device
        )
        for i, name in enumerate(project.names):
            project.accept(name, labels[i])
        config = TrainConfig(n_epochs=ROUND_EPOCHS, device=device, save_every=10**6)
        gen = project.iter_retrain(config=config, evaluate=False)
        ends = []
        for event in gen:
            if isinstance(event, EpochEvent):
                ends.append(time.perf_counter())
                if len(ends) > epochs:
                    gen.close()
                    break
    return float(np.median(np.diff(ends)))


def time_cellpose(images, labels, *, epochs: int) -> float | None:
    """Seconds per epoch of Cellpose's train_seg, or None without the reference venv."""
    python = REPO / ".venv-cellpose" / "bin" / "python"
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "data.npz"
        arrays = {f"img{i}": im for i, im in enumerate(images)}
        arrays.update({f"lab{i}": lab for i, lab in enumerate(labels)})
        np.savez(npz, **arrays)
        res = subprocess.run(
            [str(python), "-c", _CELLPOSE_SCRIPT, str(npz), "1", str(1 + epochs)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    times = json.loads(res.stdout.strip().splitlines()[-1])
    return (times[str(1 + epochs)] - times["1"]) / epochs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time 3 epochs and extrapolate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-cellpose", action="store_true", help="skip the baseline")
    args = parser.parse_args(argv)
    epochs = 3 if args.quick else ROUND_EPOCHS - 1
    images, labels = _data()
    cp2 = time_cp2(images, labels, epochs=epochs, device=args.device)
    print(f"cp2      : {cp2:.2f} s/epoch -> one round of {ROUND_EPOCHS} epochs "
          f"~ {cp2 * ROUND_EPOCHS:.0f} s (target <= 300 s on 2 CPU cores)")  # fmt: skip
    if not args.no_cellpose and args.device == "cpu":
        ref = time_cellpose(images, labels, epochs=epochs)
        if ref is not None:
            print(f"cellpose : {ref:.2f} s/epoch -> ~ {ref * ROUND_EPOCHS:.0f} s per round")
            print(f"speed-up of cp2 over cellpose: {ref / cp2:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
