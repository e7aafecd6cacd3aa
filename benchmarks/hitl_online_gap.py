"""Why do online HITL rounds trail offline training on the same images? Labels or schedule.

An online round of ``cp2 experiment hitl-vs-offline`` differs from the offline point on the same
images in two ways: its labels are the simulated annotator's (ROIs the model got right at IoU >=
``keep_iou`` are kept as the model drew them) and its schedule is the paper's online one (100
epochs, learning rate held to the end) instead of 300 epochs annealed. This trains the missing
corners of that 2 x 2 from the same starting model on the pool's first N images, with the
experiment's own settings, data loading and test evaluation:

* ``gt_online``: ground-truth labels, online schedule;
* ``ann_offline``: the annotator's labels of the online run (its project's ``corrected/``), offline
  schedule;
* ``gt_anneal100``: ground-truth labels, the offline (annealed) schedule cut to 100 epochs.

The other two corners are already in the journal (offline point N, online round N). The annotator's
labels come from the online strategy's project in ``<out>/journal/work/`` (git-ignored), so run
the online strategy for N rounds first. Usiigaci, N = 8 (~4 min per 100 epochs here)::

    R=results/heldout_usiigaci
    W=$R/journal/work/pretrained_online_random-keep0.75-bac1515b2936c2b8
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/hitl_online_gap.py \\
        gt_online ann_offline gt_anneal100 --dataset ../shared/datasets/usiigaci \\
        --pool-split splits/usiigaci_train.csv --test-split splits/usiigaci_val.csv \\
        --diameter 30 --pretrained $R/gen_cyto_no_usiigaci --project $W --out $R/online_gap
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import tifffile

from cp2_engine.hitl import ExperimentSettings, split_data
from cp2_engine.inference import Model
from cp2_engine.metrics import average_precision
from cp2_engine.training import train

logger = logging.getLogger("hitl_online_gap")
VARIANTS = ("gt_online", "ann_offline", "gt_anneal100")


def _config(variant: str):
    settings = ExperimentSettings()
    cfg = settings.train_config("online" if variant.endswith("online") else "offline")
    return dataclasses.replace(cfg, n_epochs=100) if variant.endswith("anneal100") else cfg


def _run(variant: str, data, labels: dict, args) -> dict:
    images = data.train_images[: args.n]
    cfg = _config(variant)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train(args.pretrained, images, labels[variant[:3]], config=cfg,
                    save_path=Path(tmp) / "model")  # fmt: skip
    seconds = time.perf_counter() - t0
    model = Model.from_net(res.net, name=variant)
    preds = [model.segment(img, diameter=data.diameter).masks for img in data.test_images]
    ap = average_precision(data.test_labels, preds, thresholds=(0.5, 0.75)).mean_ap
    return {"variant": variant, "images": data.names()[: args.n], "epochs": cfg.n_epochs,
            "mode": cfg.mode, "ap50": round(float(ap[0]), 4), "ap75": round(float(ap[1]), 4),
            "train_seconds": round(seconds, 1)}  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", choices=VARIANTS)
    for name in ("dataset", "pool-split", "test-split", "pretrained", "project", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--diameter", type=float, required=True)
    p.add_argument("-n", type=int, default=8, help="the pool's first N images (8)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = split_data(args.dataset, pool_split=args.pool_split, test_split=args.test_split,
                      diameter=args.diameter)  # fmt: skip
    corrected = Path(args.project) / "corrected"
    names = data.names()[: args.n]
    ann = [tifffile.imread(corrected / f"{n}_masks.tif") for n in names]
    labels = {"gt_": data.train_labels[: args.n], "ann": ann}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        row = _run(variant, data, labels, args)
        (out / f"{variant}.json").write_text(json.dumps(row, indent=1) + "\n")
        logger.info("%s", row)


if __name__ == "__main__":
    main()
