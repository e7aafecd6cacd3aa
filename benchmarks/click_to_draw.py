"""How often does one click draw a cell the model missed? (issue 28, item 4)

For every validation image of Usiigaci (model ``cp2_cyto``) and DSB2018 (``cp2_nuclei``),
segmented at its annotated median diameter: the true cells with no predicted match at
IoU >= 0.5 are the missed cells. Wrong predicted ROIs (matched to no true cell at 0.5) are
deleted first, as the simulated annotator does; then each missed cell is clicked once, on its
pixel nearest to its centroid, and :func:`cp2_engine.postprocess.propose_roi` proposes an ROI
from the cached flows and cell probability, cropped by the kept ROIs. Reported: the fraction of
missed cells whose proposal has IoU >= 0.75 (and >= 0.5) with the truth.

Usage::

    python benchmarks/click_to_draw.py                    # both datasets (CPU, a few minutes)
    python benchmarks/click_to_draw.py --datasets usiigaci --cache /tmp/click_cache
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"usiigaci": "cp2_cyto", "dsb2018": "cp2_nuclei"}


def val_rows(dataset: str) -> list[dict]:
    """Rows (id, type, median_diameter_px) of the dataset's validation split."""
    with open(REPO / "splits" / f"{dataset}_val.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def missed_cells(truth: np.ndarray, pred: np.ndarray):
    """(true ids not matched at IoU 0.5, predicted labels with unmatched ROIs deleted)."""
    from cp2_engine.metrics import match_masks

    m = match_masks(truth, pred, threshold=0.5)
    kept = np.isin(pred, m.pairs[:, 1]) if len(m.pairs) else np.zeros(pred.shape, bool)
    ids = np.unique(truth[truth > 0])
    missed = np.setdiff1d(ids, m.pairs[:, 0]) if len(m.pairs) else ids
    return missed, np.where(kept, pred, 0)


def centre_pixel(cell: np.ndarray) -> tuple[int, int]:
    """The cell's pixel nearest to its centroid."""
    ys, xs = np.nonzero(cell)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(ys[k]), int(xs[k])


def click_scores(seg, truth: np.ndarray) -> list[float]:
    """IoU of the one-click proposal with each missed true cell."""
    from cp2_engine.postprocess import propose_roi

    missed, kept = missed_cells(truth, seg.masks)
    scores = []
    for label in missed:
        cell = truth == label
        roi = propose_roi(seg.flows, seg.cellprob, centre_pixel(cell), labels=kept,
                          diameter=seg.diameter, niter=seg.niter,
                          cellprob_threshold=seg.config.cellprob_threshold)  # fmt: skip
        scores.append(float((roi & cell).sum() / max(1, (roi | cell).sum())))
    return scores


def run(dataset: str, *, data_root: Path, cache: Path | None, limit: int | None) -> dict:
    """Segment the validation images of ``dataset`` and score one click per missed cell."""
    from cp2_engine import io
    from cp2_engine.segmenters import load_segmenter

    model = load_segmenter(DATASETS[dataset], device="cpu")
    scores, n_true, t0 = [], 0, time.perf_counter()
    for row in val_rows(dataset)[:limit]:
        folder = data_root / dataset / "train"
        image = io.imread(folder / f"{row['id']}_img.tif")
        truth = io.read_labels(folder / f"{row['id']}_masks.tif")
        cached = None if cache is None else cache / f"{dataset}_{row['id']}.pkl"
        if cached is not None and cached.exists():
            import pickle

            seg = pickle.loads(cached.read_bytes())
        else:
            seg = model.segment(image, channels=(0, 0), diameter=float(row["median_diameter_px"]))
            if cached is not None:
                import pickle

                cache.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps(seg))
        n_true += int(len(np.unique(truth)) - 1)
        scores += click_scores(seg, truth)
    s = np.asarray(scores)
    return {
        "dataset": dataset,
        "model": DATASETS[dataset],
        "images": len(val_rows(dataset)[:limit]),
        "true_cells": n_true,
        "missed": len(s),
        "click_iou_ge_075": float((s >= 0.75).mean()) if len(s) else float("nan"),
        "click_iou_ge_05": float((s >= 0.5).mean()) if len(s) else float("nan"),
        "median_iou": float(np.median(s)) if len(s) else float("nan"),
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    """Print one line per dataset (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--cache", type=Path, default=None, help="keep segmentations here")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per dataset")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = [run(d, data_root=args.data, cache=args.cache, limit=args.limit)
               for d in args.datasets]  # fmt: skip
    for r in results:
        print(f"{r['dataset']} ({r['model']}, {r['images']} images, {r['true_cells']} cells): "
              f"{r['missed']} missed; one click gives IoU >= 0.75 for "
              f"{100 * r['click_iou_ge_075']:.0f}%, >= 0.5 for {100 * r['click_iou_ge_05']:.0f}% "
              f"(median IoU {r['median_iou']:.2f}; {r['seconds']:.0f} s)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
