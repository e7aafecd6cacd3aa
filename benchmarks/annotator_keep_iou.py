"""How good are the outlines a model gets right at IoU 0.5? The data behind the simulated
annotator's default ``keep_iou`` (``cp2_engine.hitl.KEEP_IOU``).

For each bundled model on real validation images it has not trained on (``cp2_nuclei`` on DSB2018
val, per type; ``cp2_cyto`` on Usiigaci val), the predicted ROIs matched one-to-one to true ROIs
at IoU >= 0.5 are binned by IoU: [0.5, 0.75), [0.75, 0.8), [0.8, 0.9), [0.9, 1]. Images are
segmented at their annotated median diameter.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/annotator_keep_iou.py --per-type 2   # ~10 min
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from cp2_engine.hitl import SimulatedAnnotator
from cp2_engine.io import imread
from cp2_engine.metrics import match_masks
from cp2_engine.segmenters import load_segmenter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets"
EDGES = (0.5, 0.75, 0.8, 0.9, 1.0001)
PAIRS = (("cp2_nuclei", "dsb2018", "dsb2018_val"), ("cp2_cyto", "usiigaci", "usiigaci_val"))


def matched_ious(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true ROI matched to a predicted ROI at IoU >= 0.5."""
    return np.asarray(match_masks(truth, pred, threshold=0.5).ious, float)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-type", type=int, default=3, help="images per type (default 3)")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    args = p.parse_args(argv)
    table = {}
    for model_name, dataset, split in PAIRS:
        model = load_segmenter(model_name, device="cpu")
        with open(REPO / "splits" / f"{split}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        by_type: dict[str, list] = {}
        for row in rows:
            by_type.setdefault(row["type"], []).append(row)
        for kind, items in sorted(by_type.items()):
            ious, fixed, kept = [], 0, 0
            for row in items[: args.per_type]:
                folder = DATA / dataset / "train"
                img = imread(folder / f"{row['id']}_img.tif")
                truth = imread(folder / f"{row['id']}_masks.tif")
                pred = model.segment(img, diameter=float(row["median_diameter_px"])).masks
                ious.append(matched_ious(truth, pred))
                c = SimulatedAnnotator().correct(truth, pred)
                fixed, kept = fixed + c.n_fixed, kept + c.n_kept
            ious = np.concatenate(ious)
            counts = np.histogram(ious, bins=EDGES)[0]
            frac = (counts / max(1, len(ious))).round(3).tolist()
            table[f"{model_name} on {dataset}/{kind}"] = {
                "n_images": min(len(items), args.per_type), "n_matched": len(ious),
                "fractions": dict(zip(["0.5-0.75", "0.75-0.8", "0.8-0.9", "0.9-1"], frac)),
                "median_iou": round(float(np.median(ious)), 3) if len(ious) else None,
                "kept_at_0.75": kept, "fixed_at_0.75": fixed,
            }  # fmt: skip
            print(model_name, kind, table[f"{model_name} on {dataset}/{kind}"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
